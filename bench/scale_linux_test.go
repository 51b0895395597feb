package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/coder/coder/v2/codersdk"

	"github.com/codervpn/codervpn/internal/dlhost"
	"github.com/codervpn/codervpn/internal/memlimit"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// Scale: a user with 1,000 running workspaces of two agents each.
const (
	scaleWorkspaces     = 1000
	agentsPerWorkspace  = 2
	scaleAgents         = scaleWorkspaces * agentsPerWorkspace
	scaleSettleDeadline = 25 * time.Second
)

// BenchmarkScale starts a tunnel (our library in the C host) for a user
// with 1,000 workspaces × 2 agents (stub agents: real nodes, no engines) and
// measures the time from the StartRequest to the PeerUpdates listing every
// agent, the time from the StopRequest to the StopResponse, the size of a full GetPeerUpdate reply, and the C host's memory per
// agent: its anonymous memory with every agent's WireGuard peer configured,
// against the same tunnel to a user with no workspaces. The baseline is the
// same host with a fixed 40 MiB limit (GOMEMLIMIT=40MiB), which is what the
// library's governed default would be without its governor.
func BenchmarkScale(b *testing.B) {
	empty := measureScale(b, 0, "")
	full := measureScale(b, scaleWorkspaces, "")
	fixed := measureScale(b, scaleWorkspaces, "GOMEMLIMIT=40MiB")
	perAgent := func(r scaleResult) float64 { return float64(r.anonKB-empty.anonKB) / scaleAgents }
	b.ReportMetric(float64(full.firstFull.Milliseconds()), "ms-to-full-update")
	b.ReportMetric(perAgent(full), "KiB/agent")
	report(row{"scale", fmt.Sprintf("StartRequest → PeerUpdates listing all %d agents: default vs fixed 40 MiB limit", scaleAgents),
		ms(full.firstFull), ms(fixed.firstFull), ratio(float64(full.firstFull), float64(fixed.firstFull)), "<= 200 ms"})
	report(row{"scale", "StartRequest → StartResponse (waits ≤ 500 ms for the engine's peers)",
		ms(full.startResponse), ms(fixed.startResponse), ratio(float64(full.startResponse), float64(fixed.startResponse)), ""})
	report(row{"scale", "control connection lost during the start and settle (the coordinator drops a client that falls behind)",
		fmt.Sprint(full.reconnects), fmt.Sprint(fixed.reconnects), "", "0"})
	report(row{"scale", fmt.Sprintf("StopRequest → StopResponse, %d agents vs none", scaleAgents),
		ms(full.stopResponse), ms(empty.stopResponse), ratio(float64(full.stopResponse), float64(empty.stopResponse)), "<= 1 s"})
	report(row{"scale", "  StopResponse → coderStopVPN returned (the rest of the teardown)",
		ms(full.stopRest), ms(empty.stopRest), ratio(float64(full.stopRest), float64(empty.stopRest)), ""})
	report(row{"scale", "GetPeerUpdate reply with every agent", fmt.Sprintf("%.0f KiB", float64(full.snapshotBytes)/1024), "", "", ""})
	report(row{"scale", "C host anonymous memory per agent (vs a user with none): default vs fixed",
		fmt.Sprintf("%.1f KiB", perAgent(full)), fmt.Sprintf("%.1f KiB", perAgent(fixed)), ratio(perAgent(full), perAgent(fixed)), "<= 20 KiB"})
	report(row{"scale", "  C host anonymous memory, 2000 agents / none", mib(full.anonKB), mib(empty.anonKB), "", ""})
}

type scaleResult struct {
	firstFull     time.Duration
	startResponse time.Duration
	stopResponse  time.Duration // StopRequest sent → StopResponse read
	stopRest      time.Duration // StopResponse read → coderStopVPN returned
	reconnects    int           // control connections lost during the run
	snapshotBytes int
	anonKB        int64
}

// measureScale runs one tunnel in a fresh C host (env added to its
// environment) against a deployment with workspaces × agentsPerWorkspace
// stub agents.
func measureScale(b *testing.B, workspaces int, env string) scaleResult {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := vpntest.New(b, vpntest.Options{})
	for i := range workspaces {
		ws, err := d.AddWorkspace(fmt.Sprintf("ws-%04d", i), codersdk.WorkspaceStatusRunning)
		if err != nil {
			b.Fatal(err)
		}
		for j := range agentsPerWorkspace {
			if _, err := d.AddStubAgent(ctx, ws.ID, fmt.Sprintf("agent-%d", j)); err != nil {
				b.Fatal(err)
			}
		}
	}
	host := startCHost(b, env)
	defer host.Close()
	h, handle := connectCHost(ctx, b, host)
	b.ResetTimer()
	var r scaleResult
	want := workspaces * agentsPerWorkspace
	// PeerUpdates may arrive before the StartResponse (the tunnel sends the
	// agents as soon as it knows them), so the wait for the full update
	// runs beside the Start call and takes the time the update arrived.
	start := time.Now()
	full := make(chan error, 1)
	go func() {
		_, err := h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool { return len(s.Agents) == want })
		r.firstFull = time.Since(start)
		full <- err
	}()
	resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: d.URL.String(), ApiToken: d.Token})
	if err != nil || !resp.GetSuccess() {
		b.Fatalf("StartRequest: %v %v", resp, err)
	}
	r.startResponse = time.Since(start)
	if err := <-full; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	snap, err := h.GetPeerUpdate(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if len(snap.GetUpsertedAgents()) != want {
		b.Fatalf("GetPeerUpdate lists %d agents, want %d", len(snap.GetUpsertedAgents()), want)
	}
	r.snapshotBytes = proto.Size(&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_PeerUpdate{PeerUpdate: snap}})
	// Memory once the engine has every peer: the anonymous size stops
	// moving. Sampled, since nothing announces that the engine is done.
	r.anonKB = settledAnon(ctx, b, host)
	for _, l := range h.Logs() {
		if strings.Contains(l.GetMessage(), "control connection to the deployment ended") {
			r.reconnects++
		}
	}
	// The stop, as the NetworkExtension does it: StopRequest, then
	// coderStopVPN once the StopResponse is in. The user waits for the first
	// part; the second is the teardown the library finishes before the call
	// returns.
	stop := time.Now()
	if resp, err := h.Stop(ctx); err != nil || !resp.GetSuccess() {
		b.Fatalf("StopRequest: %v %v", resp, err)
	}
	r.stopResponse = time.Since(stop)
	stopped := time.Now()
	if rc, err := host.StopVPN(handle); err != nil || rc != 0 {
		b.Fatalf("coderStopVPN = %d, %v", rc, err)
	}
	r.stopRest = time.Since(stopped)
	return r
}

// settledAnon samples the host's anonymous memory once a second over a
// window longer than the library's memory-limit recheck (a limit lifted by
// the start comes down at the latest one recheck after the start's garbage
// is gone), until the window's samples agree within 1 % or the settle
// deadline passes, and returns the window's median. With two thousand
// peers the engine keeps allocating and freeing (handshake attempts to
// agents that never answer), so the window rarely agrees exactly.
func settledAnon(ctx context.Context, b *testing.B, host *dlhost.Host) int64 {
	window := int(memlimit.Recheck/time.Second) + 2
	var last []int64
	deadline := time.Now().Add(scaleSettleDeadline)
	for {
		s, err := host.Stats()
		if err != nil {
			b.Fatal(err)
		}
		last = append(last, s.AnonKB)
		if n := len(last); n >= window {
			w := slices.Clone(last[n-window:])
			slices.Sort(w)
			if float64(w[len(w)-1]-w[0]) <= 0.01*float64(w[len(w)-1]) || time.Now().After(deadline) || ctx.Err() != nil {
				return w[len(w)/2]
			}
		}
		time.Sleep(time.Second) // sampling interval
	}
}
