package vpnlib_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"cdr.dev/slog/v3"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// captureSink keeps the text of every entry of the tunnel's local logger (the
// CLI's stderr copy), which must be redacted like the manager's.
type captureSink struct {
	mu      sync.Mutex
	entries []string
}

func (c *captureSink) LogEntry(_ context.Context, e slog.SinkEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = append(c.entries, fmt.Sprint(e.Message, e.LoggerNames, e.Fields))
}

func (*captureSink) Sync() {}

func (c *captureSink) find(s string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		if strings.Contains(e, s) {
			return e, true
		}
	}
	return "", false
}

// TestStartURLCredentialsNeverLeak sends coder_urls carrying credentials in
// their userinfo (https://user:secretpw@host, or a token as the user name).
// People paste such URLs; the tunnel logs the URL it was asked for before it
// validates the request, and quotes it in errors. Whether the Start succeeds
// or fails at any stage, the credential must appear in no Log message, no
// line of the local log, and no StartResponse error.
func TestStartURLCredentialsNeverLeak(t *testing.T) {
	const password = "secretpw"
	const userToken = "tokenlikeusername0123456789"
	cases := []struct {
		name       string
		deployment bool
		secret     string
		url        func(t *testing.T, d *vpntest.Deployment) string
		badToken   bool
		want       string // in the StartResponse error; "" for success
	}{
		{
			name: "success", deployment: true, secret: password,
			url: func(_ *testing.T, d *vpntest.Deployment) string { return "http://user:" + password + "@" + d.URL.Host },
		},
		{
			name: "token rejected", deployment: true, secret: password, badToken: true, want: "401",
			url: func(_ *testing.T, d *vpntest.Deployment) string { return "http://user:" + password + "@" + d.URL.Host },
		},
		{
			name: "no host", secret: password, want: "has no host",
			url: func(*testing.T, *vpntest.Deployment) string { return "https://user:" + password + "@/path" },
		},
		{
			name: "not http", secret: password, want: "must start with https:// or http://",
			url: func(*testing.T, *vpntest.Deployment) string { return "ftp://user:" + password + "@coder.example.com" },
		},
		{
			name: "bad port", secret: password, want: "not a valid URL",
			url: func(*testing.T, *vpntest.Deployment) string { return "https://user:" + password + "@host:port" },
		},
		{
			name: "unreachable", secret: password, want: "cannot reach",
			url: func(t *testing.T, _ *vpntest.Deployment) string {
				return "http://user:" + password + "@" + closedAddr(t)
			},
		},
		{
			name: "token as user name", secret: userToken, want: "has no host",
			url: func(*testing.T, *vpntest.Deployment) string { return "https://" + userToken + "@/path" },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			local := &captureSink{}
			o := rigOptions{config: func(c *vpnlib.TunnelConfig) { c.Logger = slog.Make(local) }}
			if tc.deployment {
				o.deployment = &vpntest.Options{}
			}
			r := newRig(t, o)
			req := &vpnpb.StartRequest{CoderUrl: tc.url(t, r.d), ApiToken: "some-api-token-value"}
			if r.d != nil && !tc.badToken {
				req.ApiToken = r.d.Token
			}
			resp, err := r.h.Start(r.ctx, req)
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			switch {
			case tc.want == "" && !resp.Success:
				t.Fatalf("start failed: %s", resp.ErrorMessage)
			case tc.want != "" && (resp.Success || !strings.Contains(resp.ErrorMessage, tc.want)):
				t.Fatalf("start: success=%v error %q, want an error containing %q", resp.Success, resp.ErrorMessage, tc.want)
			}
			if strings.Contains(resp.ErrorMessage, tc.secret) {
				t.Fatalf("the StartResponse error carries the URL's credential: %s", resp.ErrorMessage)
			}
			r.stop() // flushes every queued Log before the StopResponse

			// The request was logged (so this test looks where the leak was).
			if _, ok := logsContain(r.h, "starting the tunnel"); !ok {
				t.Fatal("no Log records the StartRequest")
			}
			if text, found := logsContain(r.h, tc.secret); found {
				t.Fatalf("a Log message carries the URL's credential: %s", text)
			}
			if text, found := local.find(tc.secret); found {
				t.Fatalf("the local log carries the URL's credential: %s", text)
			}
		})
	}
}
