package vpnlib_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
)

// hostileToken is the API token the tests hand the tunnel; no request to a
// host other than the one in coder_url may carry it.
const hostileToken = "hostile0ab-SecretPartOfTheToken123456"

// hostileStartTimeout bounds each Start against a hostile deployment.
const hostileStartTimeout = 3 * time.Second

// recorder is an HTTP server on another host (another origin) that records
// what it is sent: where the hostile deployment points the tunnel.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, r.Clone(context.Background()))
		rec.mu.Unlock()
		w.WriteHeader(http.StatusOK) // a latency check succeeds; a DERP upgrade does not
	}))
	rec.Config.ErrorLog = quietLog()
	t.Cleanup(rec.Close)
	return rec
}

func (rec *recorder) paths() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []string
	for _, r := range rec.reqs {
		out = append(out, r.URL.Path)
	}
	return out
}

// sawToken reports whether any request carried the token anywhere in its
// headers or URL.
func (rec *recorder) sawToken() bool {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.reqs {
		if strings.Contains(r.URL.String(), hostileToken) {
			return true
		}
		for _, values := range r.Header {
			for _, v := range values {
				if strings.Contains(v, hostileToken) {
					return true
				}
			}
		}
	}
	return false
}

// hostile serves the REST calls of a Start: the user, then the connection
// info pointing DERP at other, then a control endpoint that never answers.
// A case overrides the route it attacks.
func hostile(t *testing.T, other *recorder, override map[string]http.HandlerFunc) *httptest.Server {
	done := make(chan struct{})
	port, _ := strconv.Atoi(other.URL[strings.LastIndex(other.URL, ":")+1:])
	routes := map[string]http.HandlerFunc{
		"/api/v2/users/me": func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(codersdk.User{ReducedUser: codersdk.ReducedUser{MinimalUser: codersdk.MinimalUser{ID: uuid.New(), Username: "mallory"}}})
		},
		"/api/v2/workspaceagents/connection": func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(workspacesdk.AgentConnectionInfo{DERPMap: &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{
				1: {RegionID: 1, RegionCode: "elsewhere", Nodes: []*tailcfg.DERPNode{{
					Name: "1a", RegionID: 1, HostName: "127.0.0.1", IPv4: "127.0.0.1", IPv6: "none",
					DERPPort: port, STUNPort: -1, ForceHTTP: true,
				}}},
			}}})
		},
		"/api/v2/tailnet": func(_ http.ResponseWriter, r *http.Request) {
			select { // hang until the client or the test gives up
			case <-r.Context().Done():
			case <-done:
			}
		},
	}
	for path, h := range override {
		routes[path] = h
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, ok := routes[r.URL.Path]; ok {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	srv.Config.ErrorLog = quietLog()
	srv.Start()
	t.Cleanup(func() {
		close(done)
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

// drip writes head at once, then s one byte at a time, slowly, on a
// hijacked connection, until the client goes away or the test ends: a
// slow-loris answer.
func drip(head, s string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := conn.Write([]byte(head)); err != nil {
			return
		}
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write([]byte{s[i%len(s)]}); err != nil {
				return
			}
		}
	}
}

// TestHostileDeployment points Start at servers that answer the REST calls
// with garbage, huge or endless bodies, redirects to another host, slow-loris
// answers, or a DERP map naming another host. Start must fail with a message
// that names the problem, within its deadline; the other host must never
// see the API token; and the tunnel must stay usable.
func TestHostileDeployment(t *testing.T) {
	cases := []struct {
		name     string
		override func(other *recorder) map[string]http.HandlerFunc
		want     []string
		// derp: wait for the tunnel to contact the DERP relay on the
		// other host before judging (it must do so without the token).
		derp bool
	}{
		{
			name: "garbage JSON",
			override: func(*recorder) map[string]http.HandlerFunc {
				return map[string]http.HandlerFunc{"/api/v2/users/me": func(w http.ResponseWriter, _ *http.Request) {
					_, _ = w.Write([]byte(`{"id": "not-a-uuid", "username": [}`))
				}}
			},
			want: []string{"is not a Coder deployment (/api/v2/users/me did not answer JSON"},
		},
		{
			name: "an HTML page",
			override: func(*recorder) map[string]http.HandlerFunc {
				return map[string]http.HandlerFunc{"/api/v2/workspaceagents/connection": func(w http.ResponseWriter, _ *http.Request) {
					_, _ = w.Write([]byte("<html><body>Welcome to the captive portal</body></html>"))
				}}
			},
			want: []string{"is not a Coder deployment (/api/v2/workspaceagents/connection did not answer JSON"},
		},
		{
			name: "huge body",
			override: func(*recorder) map[string]http.HandlerFunc {
				return map[string]http.HandlerFunc{"/api/v2/users/me": func(w http.ResponseWriter, r *http.Request) {
					chunk := []byte(strings.Repeat(" ", 64<<10))
					for i := 0; i < 1600 && r.Context().Err() == nil; i++ { // 100 MiB of whitespace
						if _, err := w.Write(chunk); err != nil {
							return
						}
					}
				}}
			},
			want: []string{"/api/v2/users/me answered more than 8 MiB"},
		},
		{
			name: "redirect to another host",
			override: func(other *recorder) map[string]http.HandlerFunc {
				return map[string]http.HandlerFunc{"/api/v2/users/me": func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, other.URL+"/api/v2/users/me", http.StatusTemporaryRedirect)
				}}
			},
			want: []string{"redirected /api/v2/users/me (307); use the deployment's access URL"},
		},
		{
			name: "control connection redirected to another host",
			override: func(other *recorder) map[string]http.HandlerFunc {
				return map[string]http.HandlerFunc{"/api/v2/tailnet": func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, other.URL+"/api/v2/tailnet", http.StatusFound)
				}}
			},
			want: []string{"redirected /api/v2/tailnet (302)"},
		},
		{
			name: "slow-loris headers",
			override: func(*recorder) map[string]http.HandlerFunc {
				return map[string]http.HandlerFunc{"/api/v2/users/me": drip("", "HTTP/1.1 200 OK\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")}
			},
			want: []string{"the tunnel did not start within 3s", "timed out"},
		},
		{
			name: "slow-loris body",
			override: func(*recorder) map[string]http.HandlerFunc {
				return map[string]http.HandlerFunc{"/api/v2/workspaceagents/connection": drip(
					"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", `{"derp_map": {`+strings.Repeat(" ", 1000))}
			},
			want: []string{"the tunnel did not start within 3s", "/api/v2/workspaceagents/connection"},
		},
		{
			name: "DERP relay on another host",
			derp: true,
			want: []string{"the tunnel did not start within 3s", "tailnet API"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, rigOptions{config: func(c *vpnlib.TunnelConfig) { c.StartTimeout = hostileStartTimeout }})
			other := newRecorder(t)
			var override map[string]http.HandlerFunc
			if tc.override != nil {
				override = tc.override(other)
			}
			srv := hostile(t, other, override)

			started := time.Now()
			type result struct {
				resp *vpnpb.StartResponse
				err  error
			}
			res := make(chan result, 1)
			go func() {
				resp, err := r.h.Start(r.ctx, &vpnpb.StartRequest{CoderUrl: srv.URL, ApiToken: hostileToken})
				res <- result{resp, err}
			}()
			if tc.derp {
				waitFor(r.ctx, t, "the tunnel to contact the other host's DERP relay", func() bool {
					for _, p := range other.paths() {
						if p == "/derp" {
							return true
						}
					}
					return false
				})
			}
			got := <-res
			took := time.Since(started)
			if got.err != nil {
				t.Fatalf("start: %v", got.err)
			}
			if got.resp.Success {
				t.Fatal("Start succeeded against a hostile deployment")
			}
			t.Logf("Start failed after %v: %s", took.Round(time.Millisecond), got.resp.ErrorMessage)
			for _, w := range tc.want {
				if !strings.Contains(got.resp.ErrorMessage, w) {
					t.Errorf("error %q does not contain %q", got.resp.ErrorMessage, w)
				}
			}
			// Not a timed assertion: on a loaded machine the wall clock says
			// nothing. The deadline is proven by the message the slow cases
			// must carry ("did not start within"), and a Start that ignored
			// it would hang this step past the rig's own deadline.
			if other.sawToken() {
				t.Errorf("the API token was sent to another host (it saw %v)", other.paths())
			}
			t.Logf("the other host saw %v", other.paths())
			if text, found := logsContain(r.h, hostileToken); found {
				t.Errorf("a Log message carries the token: %s", text)
			}
			if _, err := r.h.GetPeerUpdate(r.ctx); err != nil {
				t.Fatalf("the tunnel stopped serving after the failed Start: %v", err)
			}
			r.stop()
		})
	}
}
