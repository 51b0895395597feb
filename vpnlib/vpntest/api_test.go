package vpntest_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
	"github.com/coder/websocket"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// TestAuth checks every /api/v2 endpoint answers 401 with a codersdk.Response
// when the token is missing or wrong, and does not when it is right.
func TestAuth(t *testing.T) {
	ctx := testCtx(t)
	d := vpntest.New(t, vpntest.Options{})
	endpoints := []string{
		"/api/v2/users/me",
		"/api/v2/workspaceagents/connection",
		"/api/v2/tailnet?version=2.3",
		"/api/v2/no-such-route",
	}
	tokens := []struct {
		name   string
		header func(h http.Header)
		want   int
	}{
		{"missing", func(http.Header) {}, http.StatusUnauthorized},
		{"wrong", func(h http.Header) { h.Set(codersdk.SessionTokenHeader, d.Token+"x") }, http.StatusUnauthorized},
		{"in a cookie instead of the header", func(h http.Header) {
			h.Set("Cookie", codersdk.SessionTokenCookie+"="+d.Token)
		}, http.StatusUnauthorized},
		{"right", func(h http.Header) { h.Set(codersdk.SessionTokenHeader, d.Token) }, 0},
	}
	for _, ep := range endpoints {
		for _, tok := range tokens {
			t.Run(strings.TrimPrefix(ep, "/api/v2/")+"/"+tok.name, func(t *testing.T) {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.URL.String()+ep, nil)
				if err != nil {
					t.Fatal(err)
				}
				tok.header(req.Header)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				if tok.want != 0 {
					if res.StatusCode != tok.want {
						t.Fatalf("status %d, want %d", res.StatusCode, tok.want)
					}
					var body codersdk.Response
					if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
						t.Fatalf("401 body is not a codersdk.Response: %v", err)
					}
					if body.Message == "" || body.Detail == "" {
						t.Fatalf("401 body lacks message or detail: %+v", body)
					}
					return
				}
				// With the right token: no 401. The tailnet endpoint wants a
				// websocket upgrade, the unknown route is a 404.
				if res.StatusCode == http.StatusUnauthorized {
					t.Fatalf("right token rejected on %s", ep)
				}
			})
		}
	}

	t.Run("websocket with wrong token", func(t *testing.T) {
		h := http.Header{}
		h.Set(codersdk.SessionTokenHeader, "nope")
		_, res, err := websocket.Dial(ctx, d.URL.String()+"/api/v2/tailnet?version=2.3", &websocket.DialOptions{HTTPHeader: h})
		if err == nil {
			t.Fatal("websocket dial with a wrong token succeeded")
		}
		if res == nil || res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("websocket dial: want 401, got %v (%v)", res, err)
		}
		if res.Body != nil {
			_ = res.Body.Close()
		}
	})
}

// TestSDKDecodes reads users/me and the connection info with Coder's SDK.
func TestSDKDecodes(t *testing.T) {
	cases := []struct {
		name string
		opts vpntest.Options
	}{
		{"defaults", vpntest.Options{}},
		{"all options", vpntest.Options{
			BlockDirect: true, DERPForceWebSockets: true,
			HostnameSuffix: "ws.example", Token: "abc-def", OwnerName: "bob",
		}},
		// Another address than 127.0.0.1 (Linux answers on all of
		// 127.0.0.0/8): the URL and the DERP map name it.
		{"listen address", vpntest.Options{ListenAddr: "127.0.0.2:0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.ListenAddr != "" && runtime.GOOS != "linux" {
				t.Skip("127.0.0.2 is a local address on Linux only")
			}
			ctx := testCtx(t)
			d := vpntest.New(t, tc.opts)
			if tc.opts.ListenAddr != "" && d.URL.Hostname() != "127.0.0.2" {
				t.Fatalf("URL %s, want host 127.0.0.2 (Options.ListenAddr)", d.URL)
			}
			if tc.opts.Token != "" && d.Token != tc.opts.Token {
				t.Fatalf("token %q, want %q", d.Token, tc.opts.Token)
			}
			sdk := codersdk.New(d.URL)
			sdk.SetSessionToken(d.Token)
			me, err := sdk.User(ctx, codersdk.Me)
			if err != nil {
				t.Fatalf("users/me: %v", err)
			}
			if me.ID != d.OwnerID || me.Username != d.OwnerName {
				t.Fatalf("users/me = %s %q, want %s %q", me.ID, me.Username, d.OwnerID, d.OwnerName)
			}
			byName, err := sdk.User(ctx, d.OwnerName)
			if err != nil || byName.ID != d.OwnerID {
				t.Fatalf("users/%s = %v, %v", d.OwnerName, byName.ID, err)
			}
			if _, err := sdk.User(ctx, "someone-else"); err == nil {
				t.Fatal("users/someone-else succeeded")
			}

			info, err := workspacesdk.New(sdk).AgentConnectionInfoGeneric(ctx)
			if err != nil {
				t.Fatalf("connection info: %v", err)
			}
			wantSuffix := tc.opts.HostnameSuffix
			if wantSuffix == "" {
				wantSuffix = vpntest.DefaultHostnameSuffix
			}
			if info.HostnameSuffix != wantSuffix || info.DisableDirectConnections != tc.opts.BlockDirect ||
				info.DERPForceWebSockets != tc.opts.DERPForceWebSockets {
				t.Fatalf("connection info %+v does not match options %+v", info, tc.opts)
			}
			checkDERPMap(t, d, info)

			// A wrong token through the SDK surfaces as a 401 codersdk.Error.
			bad := codersdk.New(d.URL)
			bad.SetSessionToken("wrong")
			_, err = bad.User(ctx, codersdk.Me)
			var sdkErr *codersdk.Error
			if !errors.As(err, &sdkErr) || sdkErr.StatusCode() != http.StatusUnauthorized {
				t.Fatalf("wrong token: want 401 codersdk.Error, got %v", err)
			}
		})
	}
}

// checkDERPMap: one embedded region at the deployment's own listener.
func checkDERPMap(t *testing.T, d *vpntest.Deployment, info workspacesdk.AgentConnectionInfo) {
	t.Helper()
	r, ok := info.DERPMap.Regions[vpntest.EmbeddedRegionID]
	if !ok || len(info.DERPMap.Regions) != 1 {
		t.Fatalf("DERP map regions %v, want only %d", info.DERPMap.Regions, vpntest.EmbeddedRegionID)
	}
	if !r.EmbeddedRelay || len(r.Nodes) != 1 {
		t.Fatalf("region %+v is not one embedded relay node", r)
	}
	n := r.Nodes[0]
	if n.HostName != d.URL.Hostname() || n.IPv4 != d.URL.Hostname() || n.DERPPort != mustPort(t, d) || !n.ForceHTTP || n.STUNPort != -1 {
		t.Fatalf("DERP node %+v does not point at %s without STUN", n, d.URL)
	}
	// The relay answers there.
	res, err := http.Get(d.URL.String() + "/derp/latency-check")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("latency check: %d", res.StatusCode)
	}
}

func mustPort(t *testing.T, d *vpntest.Deployment) int {
	t.Helper()
	p, err := strconv.Atoi(d.URL.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRequestsRecorded: headers are recorded as received, repeated values
// included, so tunnel tests can check "sent once".
func TestRequestsRecorded(t *testing.T) {
	ctx := testCtx(t)
	d := vpntest.New(t, vpntest.Options{})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.URL.String()+"/api/v2/users/me?x=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(codersdk.SessionTokenHeader, d.Token)
	req.Header.Add("X-Custom", "a")
	req.Header.Add("X-Custom", "b")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	got := d.RequestsTo("/api/v2/users/me")
	if len(got) != 1 {
		t.Fatalf("recorded %d requests to users/me, want 1", len(got))
	}
	r := got[0]
	if r.Method != http.MethodGet || r.RawQuery != "x=1" || len(r.Header.Values("X-Custom")) != 2 {
		t.Fatalf("recorded %+v", r)
	}
	// The copy is the caller's: changing it does not change the log.
	r.Header.Del("X-Custom")
	if len(d.Requests()[0].Header.Values("X-Custom")) != 2 {
		t.Fatal("Requests returned a shared header map")
	}
}
