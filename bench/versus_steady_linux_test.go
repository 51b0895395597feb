package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// transferCost is what one process spent moving bytes: throughputs of each
// round, and CPU, context switches and the anonymous peak over all rounds;
// with the time the rounds took and the CPU the bench process (the
// deployment's DERP server and agent, the host's IP stack) spent meanwhile.
type transferCost struct {
	rates    []float64
	bytes    int64
	cpu      time.Duration
	switches int64
	peakKB   int64
	elapsed  time.Duration
	benchCPU time.Duration
}

// transfer moves size bytes to agent through each process in turn, rounds
// times, and returns what each paid.
func transfer(ctx context.Context, b *testing.B, ps []*tunnelProc, agent *vpntest.Agent, size int64) []transferCost {
	b.Helper()
	costs := make([]transferCost, len(ps))
	for i, p := range ps { // warm up: handshakes, DERP connections
		if _, err := sendToSink(ctx, p.h.DialTCP, agent, 1<<20); err != nil {
			b.Fatalf("%s: %v", contenders()[i].name, err)
		}
	}
	for range rounds {
		for i, p := range ps {
			s0, err := sampleProc(p.pid)
			if err != nil {
				b.Fatal(err)
			}
			self0, _, err := procCPU(os.Getpid())
			if err != nil {
				b.Fatal(err)
			}
			stopPeak := peakAnon(p.pid)
			t0 := time.Now()
			r, err := sendToSink(ctx, p.h.DialTCP, agent, size)
			elapsed := time.Since(t0)
			peak := stopPeak()
			if err != nil {
				b.Fatalf("%s: %v\n%s", contenders()[i].name, err, exitedBadly(p))
			}
			s1, err := sampleProc(p.pid)
			if err != nil {
				b.Fatal(err)
			}
			self1, _, err := procCPU(os.Getpid())
			if err != nil {
				b.Fatal(err)
			}
			c := &costs[i]
			c.elapsed += elapsed
			c.benchCPU += self1 - self0
			c.rates = append(c.rates, r)
			c.bytes += size
			c.cpu += s1.cpu - s0.cpu
			c.switches += s1.switches() - s0.switches()
			c.peakKB = max(c.peakKB, peak)
		}
	}
	return costs
}

// benchVersusSteady runs both tunnels side by side to three agents over
// direct UDP: idle (after every agent was reached once), one TCP stream's
// throughput and what it cost each process, small-request latency, and the
// stop.
func benchVersusSteady(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := newWorld(ctx, b, vpntest.Options{}, 3)
	ps := startAll(ctx, b, w.d, 3)
	for _, p := range ps { // every peer handshaken, as in use
		for _, a := range w.agents {
			if _, err := sendToSink(ctx, p.h.DialTCP, a, 1<<10); err != nil {
				b.Fatal(err)
			}
		}
	}
	time.Sleep(settle) // let the start's work finish before the idle window
	cpu, wake, sw, anon := idle(b, ps)
	vs(fmt.Sprintf("idle CPU, 3 agents (%s window)", idleWindow), cpu[0], cpu[1], fmtCore, "")
	vs("idle wake-ups (voluntary context switches) per minute, 3 agents", wake[0], wake[1], fmtN, "<= 0.5")
	vs("  all context switches per minute, 3 agents", sw[0], sw[1], fmtN, "")
	vs("anonymous memory (RssAnon), idle, 3 agents", anon[0], anon[1], fmtMiB, "<= 0.5")
	var inFiles []float64
	for _, p := range ps {
		kb, err := anonInFiles(p.pid)
		if err != nil {
			b.Fatal(err)
		}
		inFiles = append(inFiles, float64(kb))
	}
	vs("  of which in file mappings (a library's relocated data; not heap)", inFiles[0], inFiles[1], fmtMiB, "")

	costs := transfer(ctx, b, ps, w.agents[0], 64<<20)
	rate := func(i int) float64 { return median(costs[i].rates) }
	cpuPerGB := func(i int) float64 { return costs[i].cpu.Seconds() / (float64(costs[i].bytes) / 1e9) }
	swPerMB := func(i int) float64 { return float64(costs[i].switches) / (float64(costs[i].bytes) / 1e6) }
	vs("throughput, one TCP stream, direct (median of 3 × 64 MiB)", rate(0), rate(1), fmtMBs, ">= 1.1")
	vs("tunnel process CPU per GB, direct", cpuPerGB(0), cpuPerGB(1), func(v float64) string { return fmt.Sprintf("%.1f s", v) }, "<= 0.8")
	vs("context switches (voluntary + involuntary) per MB, direct", swPerMB(0), swPerMB(1), func(v float64) string { return fmt.Sprintf("%.1f", v) }, "")
	vs("anonymous memory, highest sample during the transfers", float64(costs[0].peakKB), float64(costs[1].peakKB), fmtMiB, "<= 0.5")

	reportLatencies(latencies(ctx, b, ps, w.agents[0]), "small request round trip")

	var stops []float64
	for i, p := range ps {
		t := time.Now()
		if r, err := p.h.Stop(ctx); err != nil || !r.GetSuccess() {
			b.Fatalf("%s: StopRequest: %v %v\n%s", contenders()[i].name, r, err, exitedBadly(p))
		}
		stops = append(stops, msOf(time.Since(t)))
		_ = p.end()
	}
	vs("StopRequest → StopResponse after the transfers, 3 agents", stops[0], stops[1], fmtMS, "")
}

func fmtUS(v float64) string { return fmt.Sprintf("%.0f µs", v) }

// derpMiBEnv sets the size of each DERP transfer round in MiB (default
// 32): longer rounds give a profile window (CODERVPN_PROFILE,
// CODERTUNNEL_PROFILE) room to lie inside one process's transfers.
const derpMiBEnv = "CODERVPN_BENCH_DERP_MIB"

// benchVersusDERP: one TCP stream's throughput with direct UDP blocked,
// and where the CPU was while it ran: each tunnel process's share of a
// core, and the bench process's (which holds the DERP server, the agent
// and the host's userspace IP stack) over the same rounds.
func benchVersusDERP(b *testing.B) {
	mibs := int64(envCount(b, derpMiBEnv, 32))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute+time.Duration(mibs/32)*time.Minute)
	defer cancel()
	w := newWorld(ctx, b, vpntest.Options{BlockDirect: true}, 1)
	ps := startAll(ctx, b, w.d, 1)
	costs := transfer(ctx, b, ps, w.agents[0], mibs<<20)
	vs(fmt.Sprintf("throughput, one TCP stream, DERP (median of %d × %d MiB)", rounds, mibs), median(costs[0].rates), median(costs[1].rates), fmtMBs, ">= 1.1")
	cpuPerGB := func(i int) float64 { return costs[i].cpu.Seconds() / (float64(costs[i].bytes) / 1e9) }
	vs("tunnel process CPU per GB, DERP", cpuPerGB(0), cpuPerGB(1), func(v float64) string { return fmt.Sprintf("%.1f s", v) }, "")
	share := func(cpu, elapsed time.Duration) float64 { return cpu.Seconds() / elapsed.Seconds() }
	vs("  tunnel process CPU while transferring, DERP", share(costs[0].cpu, costs[0].elapsed), share(costs[1].cpu, costs[1].elapsed), fmtCore, "")
	vs("  bench process CPU meanwhile (DERP server, agent, host IP stack)", share(costs[0].benchCPU, costs[0].elapsed), share(costs[1].benchCPU, costs[1].elapsed), fmtCore, "")
	benchPerGB := func(i int) float64 { return costs[i].benchCPU.Seconds() / (float64(costs[i].bytes) / 1e9) }
	vs("  bench process CPU per GB meanwhile", benchPerGB(0), benchPerGB(1), func(v float64) string { return fmt.Sprintf("%.1f s", v) }, "")
}

// benchVersusIdleNoSession: both processes idle side by side after the
// handshake, before any StartRequest: the floor of each process (its Go
// runtime, and for ours the C host and the library loaded), under the
// figures with agents.
func benchVersusIdleNoSession(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var ps []*tunnelProc
	for _, c := range contenders() {
		ps = append(ps, c.launch(ctx, b))
	}
	time.Sleep(settle) // let the process start's work finish before the idle window
	cpu, wake, _, anon := idle(b, ps)
	vs("idle CPU, no session (after the handshake, before a StartRequest)", cpu[0], cpu[1], fmtCore, "")
	vs("idle wake-ups (voluntary) per minute, no session", wake[0], wake[1], fmtN, "")
	vs("anonymous memory, no session", anon[0], anon[1], fmtMiB, "")
}

// benchVersusIdle100: both tunnels idle side by side, to 100 stub agents.
func benchVersusIdle100(b *testing.B) {
	const agents = 100
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := stubWorld(ctx, b, agents)
	ps := startAll(ctx, b, d, agents)
	time.Sleep(settle) // let the start's work finish before the idle window
	cpu, wake, sw, anon := idle(b, ps)
	vs(fmt.Sprintf("idle CPU, %d agents", agents), cpu[0], cpu[1], fmtCore, "")
	vs(fmt.Sprintf("idle wake-ups (voluntary context switches) per minute, %d agents", agents), wake[0], wake[1], fmtN, "<= 0.5")
	vs(fmt.Sprintf("  all context switches per minute, %d agents", agents), sw[0], sw[1], fmtN, "")
	vs(fmt.Sprintf("anonymous memory, idle, %d agents", agents), anon[0], anon[1], fmtMiB, "<= 0.5")
}

// benchVersusScale starts each tunnel in turn (not side by side: each has
// the machine) for a user with scaleAgents stub agents: the time to the
// PeerUpdates listing every agent, the StartResponse, the anonymous memory
// once settled, and the stop. A process that dies is reported as such.
func benchVersusScale(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	d := stubWorld(ctx, b, scaleAgents)
	cs := contenders()
	full, resp, stop := make([]float64, len(cs)), make([]float64, len(cs)), make([]float64, len(cs))
	anon := make([]float64, len(cs))
	stopNote := make([]string, len(cs))
	for i, c := range cs {
		p := c.launch(ctx, b)
		start := time.Now()
		fullCh := make(chan error, 1)
		go func() {
			_, err := p.h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool { return len(s.Agents) == scaleAgents })
			full[i] = msOf(time.Since(start))
			fullCh <- err
		}()
		r, err := p.h.Start(ctx, &vpnpb.StartRequest{CoderUrl: d.URL.String(), ApiToken: d.Token})
		if err != nil || !r.GetSuccess() {
			b.Fatalf("%s: StartRequest: %v %v\n%s", c.name, r, err, p.stderr())
		}
		resp[i] = msOf(time.Since(start))
		if err := <-fullCh; err != nil {
			b.Fatalf("%s: waiting for %d agents: %v", c.name, scaleAgents, err)
		}
		time.Sleep(2 * settle)
		var samples []float64
		for range 5 {
			s, err := sampleProc(p.pid)
			if err != nil {
				b.Fatal(err)
			}
			samples = append(samples, float64(s.anonKB))
			time.Sleep(time.Second) // sampling interval
		}
		anon[i] = median(samples)
		stopCtx, stopCancel := context.WithTimeout(ctx, time.Minute)
		t := time.Now()
		r2, err := p.h.Stop(stopCtx)
		stop[i] = msOf(time.Since(t))
		stopCancel()
		if err != nil || !r2.GetSuccess() {
			stopNote[i] = fmt.Sprintf("no StopResponse (%v)", err)
		}
		_ = p.end()
		if note := exitedBadly(p); note != "" && p.stderr() != "" {
			stopNote[i] = strings.TrimSpace(stopNote[i] + " " + note)
			b.Logf("%s at %d agents: %s", c.name, scaleAgents, panicTrace(p.stderr()))
		}
	}
	vs(fmt.Sprintf("StartRequest → PeerUpdates listing all %d agents", scaleAgents), full[0], full[1], fmtMS, "")
	vs(fmt.Sprintf("StartRequest → StartResponse, %d agents", scaleAgents), resp[0], resp[1], fmtMS, "")
	vs(fmt.Sprintf("anonymous memory, %d agents, settled", scaleAgents), anon[0], anon[1], fmtMiB, "")
	vs(fmt.Sprintf("StopRequest → StopResponse, %d agents", scaleAgents), stop[0], stop[1], fmtMS, "")
	for i, note := range stopNote {
		if note != "" {
			report(row{"vs Coder", fmt.Sprintf("  %s's stop at %d agents", cs[i].name, scaleAgents), note, "", "", ""})
		}
	}
}

// panicTrace is the panic in a process's stderr and the first frames of
// the goroutine that panicked.
func panicTrace(stderr string) string {
	i := strings.Index(stderr, "panic: ")
	if i < 0 {
		return "no panic in its stderr"
	}
	lines := strings.Split(stderr[i:], "\n")
	return strings.Join(lines[:min(len(lines), 14)], "\n")
}
