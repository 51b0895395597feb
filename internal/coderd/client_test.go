package coderd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"tailscale.com/tailcfg"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func TestCoderdClientErrors(t *testing.T) {
	t.Parallel()
	jsonHandler := func(status int, body any) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(body)
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		tls     bool // serve TLS with a certificate the client does not trust
		url     func(t *testing.T, srv *httptest.Server) string
		want    []string
	}{
		{
			name: "refused",
			url:  func(t *testing.T, _ *httptest.Server) string { return "http://" + closedPort(t) },
			want: []string{"cannot reach http://127.0.0.1:", "connection refused"},
		},
		{
			name:    "unauthorized",
			handler: jsonHandler(http.StatusUnauthorized, codersdk.Response{Message: "Invalid session token."}),
			want:    []string{"the deployment rejected the API token (401)", "Invalid session token."},
		},
		{
			name:    "not coder",
			handler: func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) },
			want:    []string{"is not a Coder deployment (404 on /api/v2/users/me)"},
		},
		{
			name:    "html 200",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>hi</html>")) },
			want:    []string{"is not a Coder deployment (/api/v2/users/me did not answer JSON"},
		},
		{
			name:    "server error",
			handler: jsonHandler(http.StatusInternalServerError, codersdk.Response{Message: "Database is down.", Detail: "pq: timeout"}),
			want:    []string{"answered 500 on /api/v2/users/me: Database is down. (pq: timeout)"},
		},
		{
			name: "redirect",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://evil.example/", http.StatusFound)
			},
			want: []string{"redirected /api/v2/users/me (302)"},
		},
		{
			name:    "untrusted certificate",
			handler: jsonHandler(http.StatusOK, codersdk.User{}),
			tls:     true,
			want:    []string{"TLS error talking to https://127.0.0.1:", "unknown authority"},
		},
		{
			name:    "plain http on https url",
			handler: jsonHandler(http.StatusOK, codersdk.User{}),
			url: func(_ *testing.T, srv *httptest.Server) string {
				return strings.Replace(srv.URL, "http://", "https://", 1)
			},
			want: []string{"TLS error talking to https://127.0.0.1:", "did not answer with TLS"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var srv *httptest.Server
			if tc.handler != nil {
				if tc.tls {
					srv = httptest.NewUnstartedServer(tc.handler)
					srv.Config.ErrorLog = discardLog()
					srv.StartTLS()
				} else {
					srv = httptest.NewServer(tc.handler)
				}
				t.Cleanup(srv.Close)
			}
			raw := ""
			if tc.url != nil {
				raw = tc.url(t, srv)
			} else {
				raw = srv.URL
			}
			c := NewClient(mustURL(t, raw), http.Header{}, nil)
			t.Cleanup(c.CloseIdle)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Me(ctx)
			if err == nil {
				t.Fatal("me succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestCoderdClientHeadersOnce checks that the session token, the custom
// headers and the telemetry header each arrive exactly once, and that a
// trusted TLS deployment works.
func TestCoderdClientHeadersOnce(t *testing.T) {
	t.Parallel()
	got := make(chan http.Header, 2)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		switch r.URL.Path {
		case "/api/v2/users/me":
			_ = json.NewEncoder(w).Encode(codersdk.User{ReducedUser: codersdk.ReducedUser{MinimalUser: codersdk.MinimalUser{Username: "alice"}}})
		case "/api/v2/workspaceagents/connection":
			_ = json.NewEncoder(w).Encode(workspacesdk.AgentConnectionInfo{
				DERPMap:        &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {RegionID: 1}}},
				HostnameSuffix: "example",
			})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	header := http.Header{}
	header.Set(codersdk.SessionTokenHeader, "tok-secret")
	header.Set("X-Custom", "custom-value")
	header.Set(codersdk.CoderDesktopTelemetryHeader, `{"device_id":"d"}`)
	c := NewClient(mustURL(t, srv.URL), header, &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, MinVersion: tls.VersionTLS12})
	t.Cleanup(c.CloseIdle)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	me, err := c.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if me.Username != "alice" {
		t.Fatalf("username %q", me.Username)
	}
	info, err := c.ConnectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.HostnameSuffix != "example" {
		t.Fatalf("suffix %q", info.HostnameSuffix)
	}
	for i := 0; i < 2; i++ {
		h := <-got
		for _, name := range []string{codersdk.SessionTokenHeader, "X-Custom", codersdk.CoderDesktopTelemetryHeader} {
			if v := h.Values(name); len(v) != 1 || v[0] != header.Get(name) {
				t.Errorf("request %d: header %s = %q, want once %q", i, name, v, header.Get(name))
			}
		}
	}
}

func TestCoderdClientNoDERP(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(workspacesdk.AgentConnectionInfo{})
	}))
	t.Cleanup(srv.Close)
	c := NewClient(mustURL(t, srv.URL), http.Header{}, nil)
	t.Cleanup(c.CloseIdle)
	_, err := c.ConnectionInfo(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no DERP relays") {
		t.Fatalf("err = %v", err)
	}
}

func TestDisplayURLHidesUserInfo(t *testing.T) {
	t.Parallel()
	got := displayURL(mustURL(t, "https://user:hunter2@coder.example.com:8443/some/path?q=1"))
	if got != "https://coder.example.com:8443" {
		t.Fatalf("displayURL = %q", got)
	}
}

// discardLog silences net/http's server error log (TLS handshake failures
// the tests provoke on purpose).
func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }
