package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/coder/coder/v2/codersdk"

	"github.com/codervpn/codervpn/internal/dlhost"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// Scale: a user with 1,000 running workspaces of two agents each.
const (
	scaleWorkspaces     = 1000
	agentsPerWorkspace  = 2
	scaleAgents         = scaleWorkspaces * agentsPerWorkspace
	scaleSettleDeadline = 2 * time.Minute
)

// BenchmarkScale starts a tunnel (our library in the C host) for a user
// with 1,000 workspaces × 2 agents (stub agents: real nodes, no engines) and
// measures the time from the StartRequest to the PeerUpdates listing every
// agent, the size of a full GetPeerUpdate reply, and the C host's memory per
// agent: its anonymous memory with every agent's WireGuard peer configured,
// against the same tunnel to a user with no workspaces.
func BenchmarkScale(b *testing.B) {
	empty := measureScale(b, 0)
	full := measureScale(b, scaleWorkspaces)
	perAgent := float64(full.anonKB-empty.anonKB) / scaleAgents
	b.ReportMetric(float64(full.firstFull.Milliseconds()), "ms-to-full-update")
	b.ReportMetric(perAgent, "KiB/agent")
	report(row{"scale", fmt.Sprintf("StartRequest → PeerUpdates listing all %d agents", scaleAgents),
		ms(full.firstFull), "", "", "<= 200 ms"})
	report(row{"scale", "StartRequest → StartResponse (waits for the engine's peers)", ms(full.startResponse), "", "", ""})
	report(row{"scale", "GetPeerUpdate reply with every agent", fmt.Sprintf("%.0f KiB", float64(full.snapshotBytes)/1024), "", "", ""})
	report(row{"scale", "C host anonymous memory per agent (vs a user with none)",
		fmt.Sprintf("%.1f KiB", perAgent), fmt.Sprintf("%s / %s", mib(full.anonKB), mib(empty.anonKB)), "", "<= 20 KiB"})
}

type scaleResult struct {
	firstFull     time.Duration
	startResponse time.Duration
	snapshotBytes int
	anonKB        int64
}

// measureScale runs one tunnel in a fresh C host against a deployment with
// workspaces × agentsPerWorkspace stub agents.
func measureScale(b *testing.B, workspaces int) scaleResult {
	lib, hostBin := library(b)
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
	host, err := dlhost.Start(hostBin, lib, os.Environ(), nil)
	if err != nil {
		b.Fatal(err)
	}
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
	if _, err := h.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	if rc, err := host.StopVPN(handle); err != nil || rc != 0 {
		b.Fatalf("coderStopVPN = %d, %v", rc, err)
	}
	return r
}

// settledAnon samples the host's anonymous memory until three samples a
// second apart agree within 1 %, and returns the last.
func settledAnon(ctx context.Context, b *testing.B, host *dlhost.Host) int64 {
	var last []int64
	deadline := time.Now().Add(scaleSettleDeadline)
	for {
		s, err := host.Stats()
		if err != nil {
			b.Fatal(err)
		}
		last = append(last, s.AnonKB)
		if n := len(last); n >= 3 {
			lo, hi := min(last[n-1], last[n-2], last[n-3]), max(last[n-1], last[n-2], last[n-3])
			if float64(hi-lo) <= 0.01*float64(hi) {
				return s.AnonKB
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return s.AnonKB
		}
		time.Sleep(time.Second) // sampling interval
	}
}
