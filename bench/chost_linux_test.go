package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/dlhost"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// idleWindow is how long the idle tunnel is watched. Its only periodic work
// is the 5 s status loop, so this sees three rounds of it.
const idleWindow = 15 * time.Second

var (
	libOnce           sync.Once
	libPath, hostPath string
	libErr            error
)

// library returns the shared library and C host to measure: the ones `make
// bench` built (CODERVPN_LIB, CODERVPN_DLHOST), or fresh builds.
func library(b *testing.B) (lib, host string) {
	b.Helper()
	libOnce.Do(func() {
		libPath, hostPath = os.Getenv("CODERVPN_LIB"), os.Getenv("CODERVPN_DLHOST")
		if libPath != "" && hostPath != "" {
			return
		}
		dir, err := os.MkdirTemp("", "codervpn-bench-")
		if err != nil {
			libErr = err
			return
		}
		libPath, hostPath, libErr = dlhost.Build(dir, "bench")
	})
	if libErr != nil {
		b.Fatal(libErr)
	}
	return libPath, hostPath
}

// BenchmarkCHost loads the shared library into the C host the way the
// NetworkExtension does and measures what the host process pays: its size,
// memory with no tunnel, with one idle tunnel to three agents and at the
// peak of a throughput run, and the CPU time and wake-ups of the idle tunnel.
// It runs twice: with the library's default soft memory limit, and with
// GOMEMLIMIT=off as the baseline that shows what the limit buys.
func BenchmarkCHost(b *testing.B) {
	lib, _ := library(b)
	var limited, unlimited chostResult
	b.Run("default", func(b *testing.B) { limited = measureCHost(b, "") })
	b.Run("GOMEMLIMIT=off", func(b *testing.B) { unlimited = measureCHost(b, "GOMEMLIMIT=off") })
	st, err := os.Stat(lib)
	if err != nil {
		b.Fatal(err)
	}
	kib := func(kb int64) float64 { return float64(kb) }
	report(row{"memory", "library size (" + filepath.Base(lib) + ", stripped)", mib(st.Size() / 1024), "", "", "< 40 MiB"})
	report(row{"memory", "C host RSS, library loaded, no tunnel (anonymous)",
		fmt.Sprintf("%s (%s)", mib(limited.loaded.RSSKB), mib(limited.loaded.AnonKB)), "", "", ""})
	report(row{"memory", "C host RSS, one tunnel idle, 3 agents: default vs GOMEMLIMIT=off",
		mib(limited.idle.RSSKB), mib(unlimited.idle.RSSKB), ratio(kib(limited.idle.RSSKB), kib(unlimited.idle.RSSKB)), "<= 30 MiB"})
	report(row{"memory", "  of which anonymous (heap, stacks: the process's own)",
		mib(limited.idle.AnonKB), mib(unlimited.idle.AnonKB), ratio(kib(limited.idle.AnonKB), kib(unlimited.idle.AnonKB)), ""})
	report(row{"memory", "C host peak RSS (VmHWM) after a 64 MiB transfer",
		mib(limited.load.HWMKB), mib(unlimited.load.HWMKB), ratio(kib(limited.load.HWMKB), kib(unlimited.load.HWMKB)), "<= 50 MiB"})
	report(row{"memory", "  of which anonymous, highest sample during the transfer",
		mib(limited.peakAnonKB), mib(unlimited.peakAnonKB), ratio(kib(limited.peakAnonKB), kib(unlimited.peakAnonKB)), ""})
	report(row{"idle", fmt.Sprintf("CPU of an idle tunnel, 3 agents (%s window)", idleWindow),
		fmt.Sprintf("%.2f %% of a core", limited.cpuShare*100), "", "", "<= 1 %"})
	report(row{"idle", "wake-ups (context switches) of the C host per minute",
		fmt.Sprintf("%.0f", limited.wakeups), "", "", ""})
}

// chostResult is one C host measurement.
type chostResult struct {
	loaded, idle, load dlhost.Stats
	peakAnonKB         int64
	cpuShare, wakeups  float64
}

// startCHost starts the C host with the library loaded and env (if not
// empty) added to this process's environment.
func startCHost(b *testing.B, env string) *dlhost.Host { return startCHostOut(b, env, nil) }

// startCHostOut is startCHost with the host's stdout and stderr going to
// out (nil discards them).
func startCHostOut(b *testing.B, env string, out io.Writer) *dlhost.Host {
	b.Helper()
	lib, hostBin := library(b)
	environ := os.Environ()
	if env != "" {
		environ = append(environ, env)
	}
	host, err := dlhost.Start(hostBin, lib, environ, out)
	if err != nil {
		b.Fatal(err)
	}
	return host
}

// measureCHost runs one C host with env added to its environment.
func measureCHost(b *testing.B, env string) chostResult {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := newWorld(ctx, b, vpntest.Options{}, 3)
	host := startCHost(b, env)
	defer host.Close()
	stats := func() dlhost.Stats {
		b.Helper()
		s, err := host.Stats()
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	cpuNow := func() (time.Duration, int64) {
		b.Helper()
		cpu, switches, err := procCPU(host.Pid())
		if err != nil {
			b.Fatal(err)
		}
		return cpu, switches
	}
	if _, err := host.Call("version"); err != nil { // the Go runtime is up
		b.Fatal(err)
	}
	var r chostResult
	r.loaded = stats()

	h, handle := connectCHost(ctx, b, host)
	resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: w.d.URL.String(), ApiToken: w.d.Token})
	if err != nil || !resp.GetSuccess() {
		b.Fatalf("StartRequest: %v %v", resp, err)
	}
	waitAgents(ctx, b, h, 3)
	for _, a := range w.agents { // every peer handshaken, as in use
		if _, err := sendToSink(ctx, h.DialTCP, a, 1<<10); err != nil {
			b.Fatal(err)
		}
	}

	b.ResetTimer()
	cpu0, sw0 := cpuNow()
	t0 := time.Now()
	time.Sleep(idleWindow) // the measurement window itself
	cpu1, sw1 := cpuNow()
	window := time.Since(t0)
	r.idle = stats()
	// The kernel keeps a peak for RSS (VmHWM) but not for its anonymous
	// part: sample that while the transfer runs.
	done := make(chan struct{})
	peakAnon := make(chan int64, 1)
	go func() {
		var peak int64
		defer func() { peakAnon <- peak }()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if s, err := host.Stats(); err == nil {
					peak = max(peak, s.AnonKB)
				}
			}
		}
	}()
	_, err = sendToSink(ctx, h.DialTCP, w.agents[0], 64<<20)
	close(done)
	r.peakAnonKB = <-peakAnon
	if err != nil {
		b.Fatal(err)
	}
	r.load = stats()
	b.StopTimer()
	if _, err := h.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	if rc, err := host.StopVPN(handle); err != nil || rc != 0 {
		b.Fatalf("coderStopVPN = %d, %v", rc, err)
	}
	r.cpuShare = (cpu1 - cpu0).Seconds() / window.Seconds()
	r.wakeups = float64(sw1-sw0) / window.Minutes()
	b.ReportMetric(float64(r.idle.RSSKB)/1024, "idle-RSS-MiB")
	b.ReportMetric(float64(r.load.HWMKB)/1024, "peak-RSS-MiB")
	b.ReportMetric(r.cpuShare*100, "idle-CPU-%")
	return r
}

// connectCHost starts a tunnel in the C host on a new hosttest.Host's fds,
// the way the NetworkExtension hands over its utun and pipes, and
// handshakes with it as the manager.
func connectCHost(ctx context.Context, b *testing.B, host *dlhost.Host) (*hosttest.Host, int32) {
	b.Helper()
	h := hosttest.New(b, hosttest.Options{})
	tun, rd, wr := h.TunnelFiles()
	handle, err := host.StartVPN(tun, rd, wr)
	if err != nil || handle < 0 {
		b.Fatalf("coderStartVPN = %d, %v", handle, err)
	}
	h.CloseTunnelEnds()
	if err := h.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	return h, handle
}

// procCPU returns the user+system CPU time of process pid and the context
// switches of all its threads, from /proc.
func procCPU(pid int) (time.Duration, int64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name (which may hold spaces) start at ")".
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	cpu := time.Duration(utime+stime) * time.Second / ticksPerSecond
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil {
		return 0, 0, err
	}
	var switches int64
	for _, t := range tasks {
		s, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		for _, line := range strings.Split(string(s), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				switches += n
			} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				switches += n
			}
		}
	}
	return cpu, switches, nil
}
