package vpnlib_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// streamChunk is what each stream write carries across a fault.
const streamChunk = 64 << 10

// TestFaultsTrafficRecovers injects, with traffic flowing to an agent, each
// fault a production deployment inflicts on its clients, and requires the
// tunnel to recover without a restart: new connections to the agent work
// again, and (unless the agent itself restarted) a TCP connection opened
// before the fault carries data after it, which proves the WireGuard
// session survived. Where the control connection is lost, the tunnel must
// reconnect with its resume token (keeping its peer id) and receive a fresh
// snapshot that reconciles its peers. Times to recovery are logged.
func TestFaultsTrafficRecovers(t *testing.T) {
	type env struct {
		r  *rig
		ws *vpntest.Workspace
		a  *vpntest.Agent
	}
	cases := []struct {
		name string
		opts vpntest.Options
		// inject causes the fault and returns the agent to reach afterwards.
		inject func(t *testing.T, e env) *vpntest.Agent
		// reconnects: the fault ends the tunnel's control connection.
		reconnects bool
		// agentRestarts: the agent's end of every TCP connection is gone.
		agentRestarts bool
	}{
		{
			name: "control connection dropped",
			inject: func(t *testing.T, e env) *vpntest.Agent {
				if n := e.r.d.DropControlConnections(); n != 1 {
					t.Fatalf("dropped %d control connections, want 1", n)
				}
				return e.a
			},
			reconnects: true,
		},
		{
			name: "coordinator restarts",
			inject: func(t *testing.T, e env) *vpntest.Agent {
				if err := e.r.d.RestartCoordinator(); err != nil {
					t.Fatal(err)
				}
				return e.a
			},
			reconnects: true,
		},
		{
			name: "DERP restarts",
			opts: vpntest.Options{BlockDirect: true},
			inject: func(t *testing.T, e env) *vpntest.Agent {
				if err := e.r.d.RestartDERP(); err != nil {
					t.Fatal(err)
				}
				return e.a
			},
		},
		{
			name: "DERP over websockets restarts",
			opts: vpntest.Options{BlockDirect: true, DERPForceWebSockets: true},
			inject: func(t *testing.T, e env) *vpntest.Agent {
				if err := e.r.d.RestartDERP(); err != nil {
					t.Fatal(err)
				}
				return e.a
			},
		},
		{
			name: "agent restarts under the same id",
			inject: func(t *testing.T, e env) *vpntest.Agent {
				back, err := e.r.d.RestartAgent(e.r.ctx, e.a.ID)
				if err != nil {
					t.Fatal(err)
				}
				return back
			},
			agentRestarts: true,
		},
		{
			name: "agent removed and back under the same id",
			inject: func(t *testing.T, e env) *vpntest.Agent {
				if err := e.r.d.RemoveAgent(e.a.ID); err != nil {
					t.Fatal(err)
				}
				if _, err := e.r.h.WaitPeerUpdate(e.r.ctx, func(s *hosttest.PeerState) bool {
					return s.Agent("dev", "main") == nil
				}); err != nil {
					t.Fatalf("the host never saw the agent go: %v", err)
				}
				back, err := e.r.d.AddAgentWithID(e.r.ctx, e.ws.ID, e.a.ID, "main")
				if err != nil {
					t.Fatal(err)
				}
				e.r.waitAgent("dev", "main")
				return back
			},
			agentRestarts: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			r := newRig(t, rigOptions{deployment: &opts})
			ws, a := r.startWithAgent(r.d.URL.String())
			s := openStream(r.ctx, t, r.h, a)
			if err := s.send(r.ctx, streamChunk); err != nil {
				t.Fatalf("stream before the fault: %v", err)
			}
			// The reconnect can only resume if the tunnel holds a token.
			waitFor(r.ctx, t, "the tunnel to get a resume token", func() bool { return r.d.ResumeTokensIssued() > 0 })
			conns, accepted := r.d.TotalControlConnections(), r.d.ResumeTokensAccepted()

			faultAt := time.Now()
			back := tc.inject(t, env{r: r, ws: ws, a: a})
			injected := time.Since(faultAt)

			if tc.reconnects {
				waitFor(r.ctx, t, "the control connection to come back", func() bool {
					return r.d.TotalControlConnections() > conns && r.d.ControlConnections() == 1
				})
				t.Logf("control connection back %v after the fault", time.Since(faultAt).Round(time.Millisecond))
				reqs := r.d.RequestsTo("/api/v2/tailnet")
				if q := reqs[len(reqs)-1].RawQuery; !strings.Contains(q, "resume_token=") {
					t.Errorf("the reconnect presented no resume token (query %q)", q)
				}
				if r.d.ResumeTokensAccepted() <= accepted {
					t.Error("the deployment accepted no resume token on the reconnect")
				}
			}
			took := waitTraffic(r.ctx, t, r.h, back, faultAt)
			t.Logf("recovery: the agent answered %v after the fault (injecting it took %v)",
				took.Round(time.Millisecond), injected.Round(time.Millisecond))

			if tc.agentRestarts {
				s = openStream(r.ctx, t, r.h, back)
			}
			if err := s.send(r.ctx, streamChunk); err != nil {
				t.Fatalf("stream after the fault: %v", err)
			}
			if err := s.finish(r.ctx); err != nil {
				t.Fatalf("stream across the fault: %v", err)
			}

			// The peers the host knows are the deployment's: one agent,
			// under its (unchanged) id, nothing left over.
			pu, err := r.h.GetPeerUpdate(r.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(pu.UpsertedAgents) != 1 || agentID(pu.UpsertedAgents[0]) != a.ID {
				t.Errorf("GetPeerUpdate after the fault lists %v, want only agent %s", pu.UpsertedAgents, a.ID)
			}
			logWarnings(t, r.h)
			r.stop()
		})
	}
}

// TestFaultNewAgentWhileTrafficFlows adds an agent while a stream to another
// one is busy: the new agent becomes reachable, and the stream never stalls
// into an error or loses a byte.
func TestFaultNewAgentWhileTrafficFlows(t *testing.T) {
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}})
	ws, a := r.startWithAgent(r.d.URL.String())
	s := openStream(r.ctx, t, r.h, a)

	stop, done := make(chan struct{}), make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
			err := s.send(ctx, 16<<10)
			cancel()
			if err != nil {
				done <- err
				return
			}
		}
	}()

	added := time.Now()
	b, err := r.d.AddAgent(r.ctx, ws.ID, "second")
	if err != nil {
		t.Fatal(err)
	}
	r.waitAgent("dev", "second")
	took := waitTraffic(r.ctx, t, r.h, b, added)
	t.Logf("the new agent answered %v after it was added", took.Round(time.Millisecond))
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("the stream to the first agent failed while the second was added: %v", err)
	}
	if err := s.finish(r.ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes streamed to the first agent meanwhile", s.sent)
	if err := probeHTTP(r.ctx, r.h, a); err != nil {
		t.Fatalf("the first agent after the second was added: %v", err)
	}
	r.stop()
}

// logWarnings shows what the manager was told at warning level or above.
func logWarnings(t *testing.T, h *hosttest.Host) {
	t.Helper()
	for _, w := range warnings(h, "") {
		t.Logf("warning sent to the manager: %s", w)
	}
}
