package bench

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/coder/v2/codersdk"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// versusTrials is how many starts of each tunnel are timed, alternately.
const versusTrials = 3

// BenchmarkVersusCoder puts our tunnel (the library in the C host) beside
// Coder's own (the pinned module's vpn.NewTunnel in bench/internal/
// codertunnel), each in a process of its own behind the same host side (a
// hosttest.Host: the manager and a userspace IP stack on a utun-framed
// socketpair), against the same embedded deployment, measured alternately
// or side by side in the same run. Every row is ours, Coder's, and their
// ratio; CPU, context switches and memory are each process's own, from
// /proc.
func BenchmarkVersusCoder(b *testing.B) {
	library(b)
	coderBinary(b)
	b.Run("start", benchVersusStart)
	b.Run("steady", benchVersusSteady)
	b.Run("latency", benchVersusLatency)
	b.Run("derp", benchVersusDERP)
	b.Run("idle0", benchVersusIdleNoSession)
	b.Run("idle100", benchVersusIdle100)
	b.Run("scale", benchVersusScale)
}

// vs reports one row comparing ours (a) with Coder's (c); lower says
// whether a lower value is the better one (the ratio is ours / Coder's
// either way).
func vs(metric string, a, c float64, format func(float64) string, target string) {
	r := ""
	if c != 0 {
		r = ratio(a, c)
	}
	report(row{"vs Coder", metric, format(a), format(c), r, target})
}

func fmtMS(v float64) string  { return fmt.Sprintf("%.1f ms", v) }
func fmtMBs(v float64) string { return mbps(v) }
func fmtMiB(v float64) string { return mib(int64(v)) }
func fmtN(v float64) string   { return fmt.Sprintf("%.0f", v) }

func medianDur(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchVersusStart starts each tunnel versusTrials times against three
// agents, alternately, each in a fresh process: StartRequest →
// StartResponse, → first byte of an agent's HTTP answer, and StopRequest →
// StopResponse.
func benchVersusStart(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := newWorld(ctx, b, vpntest.Options{}, 3)
	cs := contenders()
	resp, first, stop := make([][]time.Duration, len(cs)), make([][]time.Duration, len(cs)), make([][]time.Duration, len(cs))
	for range versusTrials {
		for i, c := range cs {
			p := c.launch(ctx, b)
			start := time.Now()
			r, err := p.h.Start(ctx, &vpnpb.StartRequest{CoderUrl: w.d.URL.String(), ApiToken: w.d.Token})
			if err != nil || !r.GetSuccess() {
				b.Fatalf("%s: StartRequest: %v %v\n%s", c.name, r, err, p.stderr())
			}
			resp[i] = append(resp[i], time.Since(start))
			fb, err := firstByte(ctx, p.h, w.agents[0])
			if err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			first[i] = append(first[i], fb.Sub(start))
			t := time.Now()
			if r, err := p.h.Stop(ctx); err != nil || !r.GetSuccess() {
				b.Fatalf("%s: StopRequest: %v %v\n%s", c.name, r, err, p.stderr())
			}
			stop[i] = append(stop[i], time.Since(t))
			if err := p.end(); err != nil {
				b.Fatalf("%s: the tunnel process ended badly: %v\n%s", c.name, err, p.stderr())
			}
		}
	}
	med := func(x [][]time.Duration, i int) float64 { return msOf(medianDur(x[i])) }
	vs("StartRequest → StartResponse, 3 agents (median of 3)", med(resp, 0), med(resp, 1), fmtMS, "<= 1.0")
	vs("StartRequest → first byte from an agent", med(first, 0), med(first, 1), fmtMS, "<= 0.8")
	vs("StopRequest → StopResponse, 3 agents", med(stop, 0), med(stop, 1), fmtMS, "")
}

// firstByte dials the agent's HTTP port through the host, sends a GET and
// returns when the first byte of the answer arrived.
func firstByte(ctx context.Context, h *hosttest.Host, a *vpntest.Agent) (time.Time, error) {
	c, err := dialRetry(ctx, h.DialTCP, netip.AddrPortFrom(a.Addr, a.HTTPPort))
	if err != nil {
		return time.Time{}, err
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: agent\r\n\r\n")); err != nil {
		return time.Time{}, err
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return time.Time{}, fmt.Errorf("first byte: %w", err)
	}
	return time.Now(), nil
}

// startAll launches every contender and starts its tunnel against d, and
// waits until each host knows want agents.
func startAll(ctx context.Context, b *testing.B, d *vpntest.Deployment, want int) []*tunnelProc {
	b.Helper()
	var ps []*tunnelProc
	for _, c := range contenders() {
		p := c.launch(ctx, b)
		r, err := p.h.Start(ctx, &vpnpb.StartRequest{CoderUrl: d.URL.String(), ApiToken: d.Token})
		if err != nil || !r.GetSuccess() {
			b.Fatalf("%s: StartRequest: %v %v\n%s", c.name, r, err, p.stderr())
		}
		ps = append(ps, p)
	}
	for i, p := range ps {
		if _, err := p.h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool { return len(s.Agents) == want }); err != nil {
			b.Fatalf("%s: waiting for %d agents: %v", contenders()[i].name, want, err)
		}
	}
	return ps
}

// idle watches every process over idleWindow, side by side, and returns
// each one's share of a core, its wake-ups per minute (voluntary context
// switches: a thread that slept and was woken), all its context switches
// per minute (the involuntary ones grow with the machine's load) and its
// anonymous memory at the end.
func idle(b *testing.B, ps []*tunnelProc) (cpu, wakeups, switches, anonKB []float64) {
	b.Helper()
	before := make([]procSample, len(ps))
	for i, p := range ps {
		s, err := sampleProc(p.pid)
		if err != nil {
			b.Fatal(err)
		}
		before[i] = s
	}
	t0 := time.Now()
	time.Sleep(idleWindow) // the measurement window itself
	window := time.Since(t0)
	for i, p := range ps {
		s, err := sampleProc(p.pid)
		if err != nil {
			b.Fatal(err)
		}
		cpu = append(cpu, (s.cpu-before[i].cpu).Seconds()/window.Seconds())
		wakeups = append(wakeups, float64(s.voluntary-before[i].voluntary)/window.Minutes())
		switches = append(switches, float64(s.switches()-before[i].switches())/window.Minutes())
		anonKB = append(anonKB, float64(s.anonKB))
	}
	return cpu, wakeups, switches, anonKB
}

func fmtCore(v float64) string { return fmt.Sprintf("%.2f %% of a core", v*100) }

// settle is how long a started tunnel is left before an idle window: its
// start's garbage collected, its first pings sent.
const settle = 5 * time.Second

// exitedBadly names how a process that died during a measurement went:
// the first line of its panic, if it printed one.
func exitedBadly(p *tunnelProc) string {
	out := p.stderr()
	if i := strings.Index(out, "panic: "); i >= 0 {
		line, _, _ := strings.Cut(out[i:], "\n")
		return line
	}
	if p.exited() {
		return "the process exited"
	}
	return ""
}

// stubWorld is a deployment with n/2 running workspaces of two stub agents
// each (real nodes and WireGuard peers, no engines).
func stubWorld(ctx context.Context, b *testing.B, n int) *vpntest.Deployment {
	b.Helper()
	d := vpntest.New(b, vpntest.Options{})
	for i := range n / agentsPerWorkspace {
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
	return d
}
