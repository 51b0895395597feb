package vpnlib_test

import (
	"testing"
	"time"

	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// unreachableWarning is the one line the tunnel logs, at warning level, when
// its control connection cannot be re-established.
const unreachableWarning = "cannot reach the deployment"

// TestFaultDeploymentUnreachable cuts the tunnel off from the deployment
// (REST, control connection and DERP all go through a proxy that is cut,
// refusing connections) while the agents keep running, then restores it.
// During the outage, an agent with a direct path keeps answering (existing
// peers keep working where they can); the tunnel retries many times but
// tells the manager once, at warning level, and the controller's per-retry
// errors reach it at debug level only. Meanwhile one agent is removed and
// another added: after the deployment returns, the tunnel reconnects with
// its resume token and the fresh snapshot reconciles both changes. A TCP
// connection opened before the outage carries data after it.
func TestFaultDeploymentUnreachable(t *testing.T) {
	cases := []struct {
		name string
		opts vpntest.Options
		// directSurvives: the agent keeps answering during the outage.
		directSurvives bool
	}{
		{name: "direct", directSurvives: true},
		{name: "derp-only", opts: vpntest.Options{BlockDirect: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			r := newRig(t, rigOptions{deployment: &opts})
			proxy := vpntest.NewProxy(t, r.d.URL)
			ws, a := r.startWithAgent(proxy.URL.String())
			leaving, err := r.d.AddAgent(r.ctx, ws.ID, "leaving")
			if err != nil {
				t.Fatal(err)
			}
			r.waitAgent("dev", "leaving")
			s := openStream(r.ctx, t, r.h, a)
			if err := s.send(r.ctx, streamChunk); err != nil {
				t.Fatal(err)
			}
			waitFor(r.ctx, t, "the tunnel to get a resume token", func() bool { return r.d.ResumeTokensIssued() > 0 })
			conns, accepted := r.d.TotalControlConnections(), r.d.ResumeTokensAccepted()

			cutAt := time.Now()
			proxy.Cut()
			waitFor(r.ctx, t, "the deployment to see the control connection go", func() bool { return r.d.ControlConnections() == 0 })
			if tc.directSurvives {
				took := waitTraffic(r.ctx, t, r.h, a, cutAt)
				t.Logf("during the outage the agent answered %v after the cut", took.Round(time.Millisecond))
			}
			// Changes the tunnel cannot hear about until it is back.
			if err := r.d.RemoveAgent(leaving.ID); err != nil {
				t.Fatal(err)
			}
			arriving, err := r.d.AddAgent(r.ctx, ws.ID, "arriving")
			if err != nil {
				t.Fatal(err)
			}
			// Let the tunnel retry a few times: each failed dial is one
			// debug Log from the controller.
			waitFor(r.ctx, t, "several redials", func() bool { return countLogs(r.h, "failed to dial tailnet v2+ API") >= 6 })
			t.Logf("%d failed redials in %v of outage", countLogs(r.h, "failed to dial tailnet v2+ API"), time.Since(cutAt).Round(time.Millisecond))
			if w := warnings(r.h, unreachableWarning); len(w) != 1 {
				t.Errorf("the manager got %d warnings about the outage, want 1: %q", len(w), w)
			}
			if w := warnings(r.h, "failed to dial"); len(w) != 0 {
				t.Errorf("per-retry errors reached the manager above debug level: %q", w)
			}

			if err := proxy.Restore(); err != nil {
				t.Fatal(err)
			}
			backAt := time.Now()
			waitFor(r.ctx, t, "the control connection to come back", func() bool {
				return r.d.TotalControlConnections() > conns && r.d.ControlConnections() == 1
			})
			t.Logf("control connection back %v after the deployment returned (outage %v)",
				time.Since(backAt).Round(time.Millisecond), backAt.Sub(cutAt).Round(time.Millisecond))
			if r.d.ResumeTokensAccepted() <= accepted {
				t.Error("the reconnect did not resume with the tunnel's token")
			}
			if _, err := r.h.WaitPeerUpdate(r.ctx, func(st *hosttest.PeerState) bool {
				return st.Agent("dev", "leaving") == nil && st.Agent("dev", "arriving") != nil
			}); err != nil {
				t.Fatalf("the snapshot after the outage did not reconcile the peers: %v", err)
			}
			t.Logf("peers reconciled %v after the deployment returned", time.Since(backAt).Round(time.Millisecond))
			took := waitTraffic(r.ctx, t, r.h, arriving, backAt)
			t.Logf("recovery: the agent added during the outage answered %v after the deployment returned", took.Round(time.Millisecond))
			took = waitTraffic(r.ctx, t, r.h, a, backAt)
			t.Logf("recovery: the first agent answered %v after the deployment returned", took.Round(time.Millisecond))
			if err := s.send(r.ctx, streamChunk); err != nil {
				t.Fatal(err)
			}
			if err := s.finish(r.ctx); err != nil {
				t.Fatalf("stream across the outage: %v", err)
			}
			// One reconnect per break: the first one after the outage may be
			// followed by another, since the coordinator ends a connection
			// that asks for a tunnel to the agent removed meanwhile (the
			// tunnel learns of the removal from that connection's snapshot).
			if n := countLogs(r.h, "reconnected to the deployment"); n < 1 {
				t.Error("the manager was never told that the deployment is back")
			} else {
				t.Logf("the manager was told %d times that the deployment is back", n)
			}
			if w := warnings(r.h, unreachableWarning); len(w) != 1 {
				t.Errorf("after the outage the manager has %d warnings about it, want 1", len(w))
			}
			logWarnings(t, r.h)
			r.stop()
		})
	}
}

// TestWakeAfterSleep simulates a laptop that slept: every connection to the
// deployment died (the proxy cuts them all and comes back, as the network
// does on wake), then the host sends WakeRequest. The tunnel rebinds its
// sockets and traffic resumes without a restart: no new StartRequest, the
// same tunnel address, and a TCP connection from before the sleep still
// works.
func TestWakeAfterSleep(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts vpntest.Options
	}{
		{name: "direct"},
		{name: "derp-only", opts: vpntest.Options{BlockDirect: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			r := newRig(t, rigOptions{deployment: &opts})
			proxy := vpntest.NewProxy(t, r.d.URL)
			_, a := r.startWithAgent(proxy.URL.String())
			before, _ := r.h.Applied()
			s := openStream(r.ctx, t, r.h, a)
			if err := s.send(r.ctx, streamChunk); err != nil {
				t.Fatal(err)
			}

			proxy.Cut()
			waitFor(r.ctx, t, "the deployment to see the control connection go", func() bool { return r.d.ControlConnections() == 0 })
			if err := proxy.Restore(); err != nil {
				t.Fatal(err)
			}
			wokeAt := time.Now()
			if err := r.h.Wake(r.ctx); err != nil {
				t.Fatalf("wake: %v", err)
			}
			t.Logf("WakeResponse after %v", time.Since(wokeAt).Round(time.Millisecond))
			if n := countLogs(r.h, "system wake: rebound sockets"); n != 1 {
				t.Errorf("the tunnel logged %d rebinds, want 1", n)
			}
			took := waitTraffic(r.ctx, t, r.h, a, wokeAt)
			t.Logf("recovery: the agent answered %v after the wake", took.Round(time.Millisecond))
			waitFor(r.ctx, t, "the control connection to come back", func() bool { return r.d.ControlConnections() == 1 })
			t.Logf("control connection back %v after the wake", time.Since(wokeAt).Round(time.Millisecond))

			if err := s.send(r.ctx, streamChunk); err != nil {
				t.Fatal(err)
			}
			if err := s.finish(r.ctx); err != nil {
				t.Fatalf("stream across the sleep: %v", err)
			}
			after, _ := r.h.Applied()
			if len(after.Addrs) != 1 || after.Addrs[0] != before.Addrs[0] {
				t.Errorf("the tunnel address changed from %v to %v: the tunnel restarted", before.Addrs, after.Addrs)
			}
			if n := len(r.d.RequestsTo("/api/v2/users/me")); n != 1 {
				t.Errorf("the deployment saw %d /users/me requests, want the Start's only", n)
			}
			r.stop()
		})
	}
}
