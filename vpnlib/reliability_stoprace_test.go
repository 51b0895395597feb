package vpnlib_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tailscale/wireguard-go/tun"

	"github.com/coder/coder/v2/codersdk"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// stopRaceRuns is how many times each Stop race runs: a few in `make unit`,
// as many as CODERVPN_STOPRACE_N says when hunting for a rare interleaving
// (the README's Reliability table records a run of 1,000 each under -race).
func stopRaceRuns(t *testing.T) int {
	t.Helper()
	s := os.Getenv("CODERVPN_STOPRACE_N")
	if s == "" {
		return 10
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("CODERVPN_STOPRACE_N=%q: want a positive number of runs per case", s)
	}
	return n
}

// TestStopRaces sends a StopRequest while the tunnel is busy with something
// else, many times, against the embedded deployment and an engine that
// keeps the tunnel busy on cue. Each run must end the same way: every
// request the manager sent before the Stop answered exactly once, the
// StopResponse the last frame, then a clean end of stream; no panic, no
// call into an engine after it closed, nothing left running.
func TestStopRaces(t *testing.T) {
	cases := []struct {
		name string
		busy raceBusy
		// stop sends the Stop (and whatever goes with it) once the tunnel
		// is busy; it returns the ids of the requests owed an answer.
		stop func(m *raceManager, e *raceEngine, run int) []uint64
	}{
		{name: "log storm", busy: raceBusy{logs: true},
			stop: func(m *raceManager, _ *raceEngine, _ int) []uint64 {
				m.waitFor(func(s raceSeen) bool { return s.logsAfterStart >= 20 }, "a storm of Log messages")
				return m.send(stopMsg())
			}},
		{name: "peer update storm", busy: raceBusy{},
			stop: func(m *raceManager, _ *raceEngine, run int) []uint64 {
				m.waitFor(func(s raceSeen) bool { return s.peerUpdates >= 1 }, "a PeerUpdate")
				// GetPeerUpdates pipelined ahead of the Stop, in one write:
				// the tunnel reads them all before the Stop.
				msgs := make([]*vpnpb.ManagerMessage, 0, 9)
				for range 1 + run%8 {
					msgs = append(msgs, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}})
				}
				return m.send(append(msgs, stopMsg())...)
			}},
		{name: "network settings in flight", busy: raceBusy{settings: true},
			stop: func(m *raceManager, _ *raceEngine, _ int) []uint64 {
				m.waitFor(func(s raceSeen) bool { return s.heldSettings >= 1 }, "a NetworkSettingsRequest held unanswered")
				return m.send(stopMsg())
			}},
		{name: "wake being handled", busy: raceBusy{},
			stop: func(m *raceManager, e *raceEngine, run int) []uint64 {
				wake := &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Wake{Wake: &vpnpb.WakeRequest{}}}
				if run%2 == 0 {
					return m.send(wake, stopMsg()) // one write: the Stop right behind the Wake
				}
				owed := m.send(wake)
				e.waitRebinding(m)
				return append(owed, m.send(stopMsg())...)
			}},
	}
	runs := stopRaceRuns(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			d := vpntest.New(t, vpntest.Options{})
			if tc.name == "peer update storm" {
				churnWorkspaces(t, d)
			}
			began := time.Now()
			for run := range runs {
				if t.Failed() {
					return
				}
				runStopRace(t, d, tc.busy, run, tc.stop)
				if (run+1)%100 == 0 && run+1 < runs {
					t.Logf("%d runs after %v", run+1, time.Since(began).Round(time.Second))
				}
			}
			t.Logf("%d runs in %v", runs, time.Since(began).Round(time.Second))
		})
	}
}

// churnWorkspaces changes a workspace's status on the deployment until the
// test ends, so that every tunnel started meanwhile gets a stream of
// workspace updates and sends the manager PeerUpdates.
func churnWorkspaces(t *testing.T, d *vpntest.Deployment) {
	t.Helper()
	ws, err := d.AddWorkspace("churn", codersdk.WorkspaceStatusRunning)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); wg.Wait() })
	wg.Go(func() {
		ticker := time.NewTicker(2 * time.Millisecond) // a load, not a wait
		defer ticker.Stop()
		statuses := []codersdk.WorkspaceStatus{codersdk.WorkspaceStatusStopping, codersdk.WorkspaceStatusStopped,
			codersdk.WorkspaceStatusStarting, codersdk.WorkspaceStatusRunning}
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-ticker.C:
			}
			_ = d.SetWorkspaceStatus(ws.ID, statuses[i%len(statuses)])
		}
	})
}

// runStopRace is one run: a tunnel on fresh pipes, started against d,
// busied, stopped, and checked.
func runStopRace(t *testing.T, d *vpntest.Deployment, busy raceBusy, run int,
	stop func(*raceManager, *raceEngine, int) []uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tunR, tunW, mgrR, mgrW := vpnlib.RPCPipes(t)
	defer mgrR.Close()
	defer mgrW.Close()
	engine := &raceEngine{busy: busy, rebinding: make(chan struct{}, 1)}
	cfg := vpnlib.TunnelConfig{
		TunFD: 0, RPCRead: tunR, RPCWrite: tunW, // fd 0 is never touched: OpenTun below
		PingInterval: 5 * time.Millisecond,
		OpenTun:      func(int) (tun.Device, error) { return newNullDevice(), nil },
	}
	vpnlib.SetEngine(&cfg, engine.start)
	tunnel, err := vpnlib.NewTunnel(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tunnel.Close()
	m := newRaceManager(ctx, t, mgrR, mgrW, busy.settings)
	owed := m.send(&vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{Start: &vpnpb.StartRequest{
		CoderUrl: d.URL.String(), ApiToken: d.Token,
	}}})
	m.waitFor(func(s raceSeen) bool { return s.started }, "the StartResponse")
	if st := m.replyTo(owed[0]).GetStart(); !st.GetSuccess() {
		t.Fatalf("run %d: Start failed: %v", run, st)
	}
	stopOwed := stop(m, engine, run)
	stopID := stopOwed[len(stopOwed)-1]
	owed = append(owed, stopOwed...)

	end := m.waitEnd()
	if !errors.Is(end, io.EOF) {
		t.Errorf("run %d: the stream ended with %v, want a clean end of file after the StopResponse", run, end)
	}
	frames := m.framesSeen()
	if len(frames) == 0 || frames[len(frames)-1].GetRpc().GetResponseTo() != stopID || frames[len(frames)-1].GetStop() == nil {
		last := "nothing"
		if len(frames) > 0 {
			last = frameKind(frames[len(frames)-1])
		}
		t.Errorf("run %d: the last frame was %s, want the StopResponse to request %d", run, last, stopID)
	} else if !frames[len(frames)-1].GetStop().GetSuccess() {
		t.Errorf("run %d: StopResponse %v", run, frames[len(frames)-1].GetStop())
	}
	answers := map[uint64]int{}
	for _, f := range frames {
		if to := f.GetRpc().GetResponseTo(); to != 0 {
			answers[to]++
		}
	}
	for _, id := range owed {
		if answers[id] != 1 {
			t.Errorf("run %d: request %d (%s) answered %d times before the end, want once",
				run, id, m.kindOf(id), answers[id])
		}
	}
	select {
	case <-tunnel.Done():
	case <-ctx.Done():
		t.Fatalf("run %d: the tunnel did not end after its StopResponse", run)
	}
	if err := tunnel.Err(); err != nil {
		t.Errorf("run %d: tunnel Err after a clean stop: %v", run, err)
	}
	for _, v := range engine.problems() {
		t.Errorf("run %d: %s", run, v)
	}
}
