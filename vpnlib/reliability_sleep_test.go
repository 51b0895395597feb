package vpnlib_test

import (
	"os"
	"testing"
	"time"

	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// TestSleepPastKeyExpiry reproduces what a laptop meets after a sleep longer
// than WireGuard keeps a session: the agent has dropped its keys (as it does
// after 9 minutes), while our engine, whose monotonic clock stood still,
// believes no time passed and its keys are fresh. With a WakeRequest the
// tunnel drops its dead sessions with every peer before it answers, so the
// next packet starts a new handshake; the time until the agent answers is
// logged, not asserted. Without a Wake (set
// CODERVPN_SLEEP_BASELINE=1; it takes WireGuard's 15 s) the test measures
// how long the agent stays unreachable.
func TestSleepPastKeyExpiry(t *testing.T) {
	cases := []struct {
		name string
		wake bool
	}{
		{name: "with WakeRequest", wake: true},
		{name: "without WakeRequest", wake: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.wake && os.Getenv("CODERVPN_SLEEP_BASELINE") == "" {
				t.Skip("the baseline waits out WireGuard's own 15 s recovery; set CODERVPN_SLEEP_BASELINE=1 to measure it")
			}
			r := newRig(t, rigOptions{
				deployment: &vpntest.Options{},
				config:     func(c *vpnlib.TunnelConfig) { c.LogQueue = 1 << 16 },
			})
			_, agent := r.startWithAgent(r.d.URL.String())

			key := agent.Conn().Node().Key
			before := r.tun.EngineHandshake(key)
			if before.IsZero() {
				t.Fatal("no WireGuard session with the agent before the sleep")
			}
			n, err := agent.ForgetSessions(r.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("the agent dropped sessions with %d peers, want 1 (our tunnel)", n)
			}
			since := time.Now()
			if tc.wake {
				if err := r.h.Wake(r.ctx); err != nil {
					t.Fatalf("Wake: %v", err)
				}
				woke := time.Since(since)
				// The proof, without timing: once the WakeResponse is in,
				// the session the agent dropped is no longer ours either
				// (none yet, or a new one), so the next packet cannot go
				// out under the dead keys.
				if after := r.tun.EngineHandshake(key); after.Equal(before) {
					t.Fatalf("after the WakeResponse the engine still uses the session of its handshake at %v, "+
						"which the agent dropped: the Wake did not renew it", before)
				}
				took := waitTraffic(r.ctx, t, r.h, agent, since)
				t.Logf("WakeResponse after %v; agent answering %v after the WakeRequest",
					woke.Round(time.Millisecond), took.Round(time.Millisecond))
			} else {
				took := waitTraffic(r.ctx, t, r.h, agent, since)
				t.Logf("without a Wake the agent answered again after %v", took.Round(time.Millisecond))
			}
			if _, ok := logsContain(r.h, "new WireGuard sessions with every peer"); ok != tc.wake {
				t.Errorf("a Log about new WireGuard sessions: %v, want %v", ok, tc.wake)
			}
			r.stop()
		})
	}
}
