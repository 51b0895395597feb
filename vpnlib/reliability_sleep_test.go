package vpnlib_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// wgOwnRecovery is when WireGuard by itself notices that its peer no longer
// answers to its keys: data sent and nothing received for KeepaliveTimeout
// + RekeyTimeout (10 + 5 s), then it starts a handshake. An agent that
// answers well before that was reached through a session the Wake made.
const wgOwnRecovery = 15 * time.Second

// TestSleepPastKeyExpiry reproduces what a laptop meets after a sleep longer
// than WireGuard keeps a session: the agent has dropped its keys (as it does
// after 9 minutes), while our engine, whose monotonic clock stood still,
// believes no time passed and its keys are fresh. With a WakeRequest the
// tunnel starts new sessions with every peer and the agent answers at once;
// the time is logged, not asserted, but the answer must come before
// WireGuard's own recovery could have produced it. Without a Wake (set
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
				// One attempt, bounded below WireGuard's own recovery.
				ctx, cancel := context.WithTimeout(r.ctx, wgOwnRecovery-time.Second)
				defer cancel()
				var last error
				for ctx.Err() == nil {
					if last = probeHTTP(ctx, r.h, agent); last == nil {
						break
					}
				}
				if last != nil {
					t.Fatalf("the agent did not answer within %s of the WakeResponse (%v): the Wake did not renew the session",
						wgOwnRecovery-time.Second, last)
				}
				t.Logf("WakeResponse after %v; agent answering %v after the WakeRequest",
					woke.Round(time.Millisecond), time.Since(since).Round(time.Millisecond))
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
