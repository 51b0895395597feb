package bench

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// latencyPerBlock is how many round trips one process makes before the
// other takes its turn.
const latencyPerBlock = 100

// latencyBlocks is how many blocks each process measures after its warm-up
// block: CODERVPN_BENCH_LATENCY_BLOCKS, 10 unless set. A p99 of 1,000
// round trips rests on its ten slowest, so one stall on a shared machine
// moves it; more blocks tell a steady tail from such a stall.
func latencyBlocks(b *testing.B) int { return envCount(b, "CODERVPN_BENCH_LATENCY_BLOCKS", 10) }

// envCount is the positive whole number the environment variable name
// sets, or def when it is unset: a bench knob whose default is what
// `make bench` measures.
func envCount(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive whole number", name, v)
	}
	return n
}

// latencyStats is one process's round trips and what the process spent
// during its own blocks (not while the other process was measured).
type latencyStats struct {
	samples          []time.Duration
	cpu              time.Duration
	voluntary, invol int64
	// gcs is how many collections the process logged during its blocks,
	// -1 unless GODEBUG=gctrace=1 makes it log them (to its stderr).
	gcs int
	// syscalls is how many system calls the process made from its first
	// measured block to its last, -1 unless CODERVPN_BENCH_PERF=1, and
	// reads how many of them were recvfrom or read (perfEvents). Both
	// include the process's few idle calls while the other one was
	// measured.
	syscalls, reads int64
}

// usOf is a duration in µs, as the rows report it.
func usOf(d time.Duration) float64 { return float64(d) / 1e3 }

// latencies measures small-request round trips to agent through each
// process, alternating in blocks of latencyPerBlock after a warm-up block
// each, and counts each process's CPU, context switches and collections
// during its own blocks.
func latencies(ctx context.Context, b *testing.B, ps []*tunnelProc, agent *vpntest.Agent) []latencyStats {
	b.Helper()
	blocks := latencyBlocks(b)
	pingers := make([]*pinger, len(ps))
	for i, p := range ps {
		pg, err := newPinger(ctx, p.h.DialTCP, addrHTTP(agent))
		if err != nil {
			b.Fatal(err)
		}
		defer pg.c.Close()
		pingers[i] = pg
	}
	out := make([]latencyStats, len(ps))
	for i := range out {
		out[i].gcs, out[i].syscalls = -1, -1
		if gcTraced() {
			out[i].gcs = 0
		}
	}
	perfs := make([]*perfStat, len(ps))
	for blk := range blocks + 1 {
		for i, pg := range pingers {
			if blk == 1 && perfCounting() {
				p, err := startPerfStat(ps[i].pid)
				if err != nil {
					b.Fatal(err)
				}
				perfs[i] = p
				b.Cleanup(p.kill)
			}
			s0, err := sampleProc(ps[i].pid)
			if err != nil {
				b.Fatal(err)
			}
			gc0 := gcCount(ps[i].stderr())
			for range latencyPerBlock {
				d, err := pg.roundTrip()
				if err != nil {
					b.Fatalf("%s: %v\n%s", contenders()[i].name, err, exitedBadly(ps[i]))
				}
				if blk > 0 { // the first block warms up
					out[i].samples = append(out[i].samples, d)
				}
			}
			s1, err := sampleProc(ps[i].pid)
			if err != nil {
				b.Fatal(err)
			}
			if blk == 0 {
				continue
			}
			out[i].cpu += s1.cpu - s0.cpu
			out[i].voluntary += s1.voluntary - s0.voluntary
			out[i].invol += s1.involunt - s0.involunt
			if out[i].gcs >= 0 {
				out[i].gcs += gcCount(ps[i].stderr()) - gc0
			}
		}
	}
	for i, p := range perfs {
		if p == nil {
			continue
		}
		n, err := p.stop()
		if err != nil {
			b.Fatal(err)
		}
		out[i].syscalls, out[i].reads = n.syscalls, n.reads
	}
	dumpLatencies(b, out)
	return out
}

// dumpLatencies writes each process's round trips, in the order they were
// measured (one duration in ns a line, blocks of latencyPerBlock), to
// CODERVPN_BENCH_LATENCY_DUMP/<name>-<n>.txt when that directory is set:
// the raw figures behind the quantiles, for telling a steady tail from a
// few stalls.
func dumpLatencies(b *testing.B, lat []latencyStats) {
	b.Helper()
	dir := os.Getenv("CODERVPN_BENCH_LATENCY_DUMP")
	if dir == "" {
		return
	}
	stamp := time.Now().UnixNano() // pairs the files of one measurement
	for i, s := range lat {
		var sb strings.Builder
		for _, d := range s.samples {
			fmt.Fprintf(&sb, "%d\n", d.Nanoseconds())
		}
		name := fmt.Sprintf("%s/%s-%d.txt", dir, contenders()[i].name, stamp)
		if err := os.WriteFile(name, []byte(sb.String()), 0o644); err != nil {
			b.Fatalf("CODERVPN_BENCH_LATENCY_DUMP: %v", err)
		}
	}
}

// reportLatencies adds the rows of one latency measurement: the
// quantiles of both processes' round trips side by side, and what each
// process paid per round trip.
func reportLatencies(lat []latencyStats, what string) {
	n := len(lat[0].samples)
	for _, q := range []struct {
		name string
		q    float64
	}{{"median", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p99.9", 0.999}, {"max", 1}} {
		vs(fmt.Sprintf("%s, %s (%d round trips)", what, q.name, n),
			usOf(quantile(lat[0].samples, q.q)), usOf(quantile(lat[1].samples, q.q)), fmtUS, "")
	}
	per := func(v int64, s latencyStats) float64 { return float64(v) / float64(len(s.samples)) }
	vs("  voluntary context switches per round trip", per(lat[0].voluntary, lat[0]), per(lat[1].voluntary, lat[1]), fmtPer, "")
	vs("  involuntary context switches per round trip", per(lat[0].invol, lat[0]), per(lat[1].invol, lat[1]), fmtPer, "")
	vs("  CPU per round trip", usOf(lat[0].cpu)/float64(n), usOf(lat[1].cpu)/float64(n), fmtUS, "")
	if lat[0].syscalls >= 0 {
		vs("  system calls per round trip (perf stat)", per(lat[0].syscalls, lat[0]), per(lat[1].syscalls, lat[1]), fmtPer, "")
		vs("  reads of the tunnel fd per round trip (recvfrom, read)", per(lat[0].reads, lat[0]), per(lat[1].reads, lat[1]), fmtPer, "")
	}
	if lat[0].gcs >= 0 {
		vs("  collections during the round trips (GODEBUG=gctrace=1)", float64(lat[0].gcs), float64(lat[1].gcs), fmtN, "")
	}
}

func fmtPer(v float64) string { return fmt.Sprintf("%.2f", v) }

// gcTraced reports whether the processes log their collections: both
// inherit the bench's environment.
func gcTraced() bool {
	return strings.Contains(os.Getenv("GODEBUG"), "gctrace=1")
}

// gcLine is the start of the line the Go runtime logs for each collection
// under GODEBUG=gctrace=1 ("gc 12 @3.456s ...").
var gcLine = regexp.MustCompile(`(?m)^gc \d+ @`)

// gcCount is how many collections stderr logs.
func gcCount(stderr string) int { return len(gcLine.FindAllStringIndex(stderr, -1)) }

// benchVersusLatency measures only the round trips, both tunnels side by
// side to one agent over direct UDP, right after the start: quicker than
// steady (no idle window, no transfers), for repeating it.
func benchVersusLatency(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := newWorld(ctx, b, vpntest.Options{}, 1)
	ps := startAll(ctx, b, w.d, 1)
	for _, p := range ps { // the peer handshaken
		if _, err := sendToSink(ctx, p.h.DialTCP, w.agents[0], 1<<10); err != nil {
			b.Fatal(err)
		}
	}
	reportLatencies(latencies(ctx, b, ps, w.agents[0]), "small request round trip, fresh tunnel")
}
