package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/codervpn/codervpn/vpnlib/hosttest"
)

// contender is one tunnel implementation the bench runs in a process of its
// own, behind a hosttest.Host: ours (the library in the C host) or Coder's
// (bench/internal/codertunnel).
type contender struct {
	name   string
	launch func(ctx context.Context, b *testing.B) *tunnelProc
}

// tunnelProc is one running tunnel process and the host that drives it.
type tunnelProc struct {
	h   *hosttest.Host
	pid int
	// end ends the process's tunnel after a StopResponse (coderStopVPN for
	// ours) and then the process; it returns how the process ended when
	// that was not a clean exit.
	end    func() error
	exited func() bool
	// stderr is what the process wrote there (Coder's: its panics).
	stderr func() string
}

// contenders are ours and Coder's, in the order every table row lists them.
func contenders() []contender {
	return []contender{
		{"codervpn", launchOurs},
		{"Coder", launchCoder},
	}
}

// launchOurs starts a C host with the library loaded and a tunnel in it
// on a new host's fds, and handshakes.
func launchOurs(ctx context.Context, b *testing.B) *tunnelProc {
	b.Helper()
	// CODERVPN_BENCH_OURS_ENV (one NAME=value) goes to our process only:
	// how a lever such as GOGC is measured against the same baseline.
	// Its output is kept, as Coder's is: what GODEBUG=gctrace=1 logs, or
	// a crash.
	var out lockedBuffer
	host := startCHostOut(b, os.Getenv("CODERVPN_BENCH_OURS_ENV"), &out)
	h, handle := connectCHost(ctx, b, host)
	var once sync.Once
	var endErr error
	end := func() error {
		once.Do(func() {
			rc, err := host.StopVPN(handle)
			if err == nil && rc != 0 {
				err = fmt.Errorf("coderStopVPN = %d", rc)
			}
			endErr = err
			h.Close()
			_ = host.Close()
		})
		return endErr
	}
	b.Cleanup(func() { _ = end() })
	exited := func() bool {
		select {
		case <-host.Exited():
			return true
		default:
			return false
		}
	}
	return &tunnelProc{h: h, pid: host.Pid(), end: end, exited: exited, stderr: out.String}
}

var (
	coderOnce sync.Once
	coderBin  string
	coderErr  error
)

// coderBinary is Coder's tunnel program: the one `make bench` built
// (CODERVPN_CODERTUNNEL), or bench/internal/codertunnel built once per run.
func coderBinary(b *testing.B) string {
	b.Helper()
	coderOnce.Do(func() {
		if coderBin = os.Getenv("CODERVPN_CODERTUNNEL"); coderBin != "" {
			return
		}
		dir, err := os.MkdirTemp("", "codervpn-bench-coder-")
		if err != nil {
			coderErr = err
			return
		}
		coderBin = filepath.Join(dir, "codertunnel")
		cmd := exec.Command("go", "build", "-o", coderBin, "./internal/codertunnel")
		if out, err := cmd.CombinedOutput(); err != nil {
			coderErr = fmt.Errorf("build Coder's tunnel (bench/internal/codertunnel): %w\n%s", err, out)
		}
	})
	if coderErr != nil {
		b.Fatal(coderErr)
	}
	return coderBin
}

// launchCoder starts Coder's tunnel in its own process on a new host's
// fds, and handshakes.
func launchCoder(ctx context.Context, b *testing.B) *tunnelProc {
	b.Helper()
	bin := coderBinary(b)
	h := hosttest.New(b, hosttest.Options{MergeSettings: true})
	tun, rd, wr := h.TunnelFiles()
	var stderr lockedBuffer
	cmd := exec.Command(bin)
	cmd.ExtraFiles = []*os.File{tun, rd, wr}
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", bin, err)
	}
	h.CloseTunnelEnds()
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	var once sync.Once
	end := func() error {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			h.Close()
		})
		return waitErr
	}
	b.Cleanup(func() { _ = end() })
	if err := h.Connect(ctx); err != nil {
		b.Fatalf("handshake with Coder's tunnel: %v\n%s", err, stderr.String())
	}
	exited := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	return &tunnelProc{h: h, pid: cmd.Process.Pid, end: end, exited: exited, stderr: stderr.String}
}

// lockedBuffer collects a child's stderr while the bench may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// procSample is what /proc says about one process at one moment.
type procSample struct {
	cpu                  time.Duration // user + system, all threads
	voluntary, involunt  int64         // context switches, all threads
	anonKB, rssKB, hwmKB int64         // RssAnon, VmRSS, VmHWM
}

func (s procSample) switches() int64 { return s.voluntary + s.involunt }

// sampleProc reads /proc/PID/stat, /proc/PID/status and every thread's
// status (the process's own context-switch counts are its main thread's).
func sampleProc(pid int) (procSample, error) {
	var s procSample
	cpu, _, err := procCPU(pid)
	if err != nil {
		return s, err
	}
	s.cpu = cpu
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for k, dst := range map[string]*int64{"RssAnon:": &s.anonKB, "VmRSS:": &s.rssKB, "VmHWM:": &s.hwmKB} {
		*dst = statusField(string(status), k)
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil {
		return s, err
	}
	for _, t := range tasks {
		st, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		s.voluntary += statusField(string(st), "voluntary_ctxt_switches:")
		s.involunt += statusField(string(st), "nonvoluntary_ctxt_switches:")
	}
	return s, nil
}

// statusField is the number after key at the start of a line of a
// /proc status file (kB for the memory lines), 0 if there is none.
func statusField(status, key string) int64 {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// peakAnon samples pid's anonymous memory every 50 ms until the returned
// function is called, which returns the highest sample: the kernel keeps a
// peak for RSS (VmHWM) but not for its anonymous part.
func peakAnon(pid int) (stop func() int64) {
	done := make(chan struct{})
	peak := make(chan int64, 1)
	go func() {
		var p int64
		defer func() { peak <- p }()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if s, err := sampleProc(pid); err == nil {
				p = max(p, s.anonKB)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-peak
	}
}

// anonInFiles is the anonymous memory of pid that lies in mappings of
// files (/proc/PID/smaps): pages of a binary or library written after it
// was mapped, such as a shared library's relocated data (.data.rel.ro),
// which count in RssAnon but are not heap.
func anonInFiles(pid int) (int64, error) {
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, err
	}
	var total int64
	inFile := false
	for _, line := range strings.Split(string(smaps), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			inFile = len(fields) >= 6 && strings.HasPrefix(fields[5], "/")
			continue
		}
		if inFile && len(fields) >= 2 && fields[0] == "Anonymous:" {
			n, _ := strconv.ParseInt(fields[1], 10, 64)
			total += n
		}
	}
	return total, nil
}
