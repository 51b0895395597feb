package vpnlib_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/coder/coder/v2/codersdk"

	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/speaker"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// The tunnel's Log messages about a Wake (see handleWake).
const (
	logRebound  = "system wake: rebound sockets"
	logDebounce = "system wake ignored: rebound moments ago"
	logIdleWake = "system wake while not running"
)

// countLogMessages counts the Log messages whose text contains s.
func countLogMessages(h *hosttest.Host, s string) int {
	n := 0
	for _, l := range h.Logs() {
		if strings.Contains(l.GetMessage(), s) {
			n++
		}
	}
	return n
}

// TestTunnelWake sends WakeRequests through a real tunnel, as Coder Desktop
// does when the Mac wakes from sleep (often twice for one wake). A running
// tunnel rebinds its sockets once, answers both, and still carries traffic;
// one that is not started answers without touching anything; and a manager
// that only speaks 1.2 never gets to send a Wake at all.
func TestTunnelWake(t *testing.T) {
	cases := []struct {
		name     string
		versions []speaker.Version
		start    bool
		wantErr  error // from the first Wake
		wantLogs []string
	}{
		{name: "running, twice", start: true, wantLogs: []string{logRebound, logDebounce}},
		{name: "not started", wantLogs: []string{logIdleWake, logIdleWake}},
		{name: "manager speaks 1.2", versions: []speaker.Version{speaker.Version12}, start: true,
			wantErr: speaker.ErrUnsupportedByPeer},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, rigOptions{
				deployment: &vpntest.Options{},
				host:       hosttest.Options{Versions: tc.versions},
				// Room for every engine log, so none of ours is dropped.
				config: func(c *vpnlib.TunnelConfig) { c.LogQueue = 1 << 16 },
			})
			var agent *vpntest.Agent
			if tc.start {
				ws, err := r.d.AddWorkspace("dev", codersdk.WorkspaceStatusRunning)
				if err != nil {
					t.Fatal(err)
				}
				if agent, err = r.d.AddAgent(r.ctx, ws.ID, "main"); err != nil {
					t.Fatal(err)
				}
				r.start(nil)
				r.waitAgent("dev", "main")
			}

			err := r.h.Wake(r.ctx)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Wake: %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil {
				// The second wake comes at once and is debounced, but still
				// answered.
				if err := r.h.Wake(r.ctx); err != nil {
					t.Fatalf("second Wake: %v", err)
				}
			}
			// The session is intact either way.
			if _, err := r.h.GetPeerUpdate(r.ctx); err != nil {
				t.Fatalf("GetPeerUpdate after Wake: %v", err)
			}
			if agent != nil {
				body := httpGet(r.ctx, t, r.h, netip.AddrPortFrom(agent.Addr, agent.HTTPPort))
				if !strings.Contains(body, "hello from agent main") {
					t.Fatalf("after the wake the agent answered %q", body)
				}
			}
			r.stop() // flushes the queued Logs

			for _, l := range []string{logRebound, logDebounce, logIdleWake} {
				want := 0
				for _, w := range tc.wantLogs {
					if w == l {
						want++
					}
				}
				if got := countLogMessages(r.h, l); got != want {
					t.Errorf("%d Log messages say %q, want %d", got, l, want)
				}
			}
		})
	}
}
