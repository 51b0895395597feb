package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/codervpn/codervpn/internal/dlhost"
)

// These tests load the real shared library into a C program, the way the
// NetworkExtension does, and drive it from the outside. TestMain builds both
// once per run.
var (
	buildDir string // holds libcodervpn.so, codervpn.h and dlhost
	libPath  string
	hostPath string
)

// testVersion is stamped into the library the tests build.
const testVersion = "v0.0.0-abitest"

func TestMain(m *testing.M) {
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cmd/dylib tests: %v\n", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "codervpn-dylib-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	buildDir = dir
	libPath, hostPath, err = dlhost.Build(dir, testVersion)
	if err != nil {
		return 0, err
	}
	code := m.Run()
	// Every goroutine of the test process (deployments, hosts) must be gone
	// at the end; the library's own live in the C host, and its fd counts
	// say whether they let go of what they held.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	return code, nil
}

// dlHost is a dlhost.Host (the C host with the library loaded) that fails
// its test on any error.
type dlHost struct {
	t      *testing.T
	h      *dlhost.Host
	output *syncBuffer
}

func startDLHost(t *testing.T) *dlHost {
	t.Helper()
	return startDLHostWith(t, libPath)
}

// startDLHostWith runs the C host with the library at lib.
func startDLHostWith(t *testing.T, lib string) *dlHost {
	t.Helper()
	out := &syncBuffer{}
	var env []string
	var w io.Writer = out
	if v := os.Getenv("CODERVPN_TEST_HOST_GODEBUG"); v != "" {
		// For looking into the library (gctrace=1, say): the host's Go
		// runtime gets the setting, and its output is shown as it comes.
		env = append(os.Environ(), "GODEBUG="+v)
		w = os.Stderr
	}
	h, err := dlhost.Start(hostPath, lib, env, w)
	if err != nil {
		t.Fatal(err)
	}
	d := &dlHost{t: t, h: h, output: out}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("%v; its output:\n%s", err, out)
		}
	})
	return d
}

// warm starts and stops one tunnel (with no manager), so that what the Go
// runtime opens once for the life of the process (its poller, cgroup files)
// is open before a test takes its fd baseline, and returns that baseline.
func (d *dlHost) warm() int {
	d.t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		d.t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	h := d.start(-1, r, w)
	if h < 0 {
		d.t.Fatalf("coderStartVPN = %d", h)
	}
	if rc := d.stop(h); rc != 0 {
		d.t.Fatalf("coderStopVPN = %d", rc)
	}
	return d.stats().FDs
}

// call sends one command and returns the reply after "ok".
func (d *dlHost) call(command string) string {
	d.t.Helper()
	out, err := d.h.Call(command)
	if err != nil {
		d.t.Fatalf("%v; its output:\n%s", err, d.output)
	}
	return out
}

// start calls coderStartVPN(tun, read, write); see dlhost.Host.StartVPN.
func (d *dlHost) start(tun, read, write any) int32 {
	d.t.Helper()
	rc, err := d.h.StartVPN(tun, read, write)
	if err != nil {
		d.t.Fatalf("%v; its output:\n%s", err, d.output)
	}
	return rc
}

func (d *dlHost) stop(h int32) int32 {
	d.t.Helper()
	rc, err := d.h.StopVPN(h)
	if err != nil {
		d.t.Fatalf("%v; its output:\n%s", err, d.output)
	}
	return rc
}

func (d *dlHost) stats() dlhost.Stats {
	d.t.Helper()
	s, err := d.h.Stats()
	if err != nil {
		d.t.Fatal(err)
	}
	return s
}

// waitFDs waits until the host has want fds open: fds are closed by the
// library before coderStopVPN returns, but a test must not hang if not.
func (d *dlHost) waitFDs(want int, what string) {
	d.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := d.stats().FDs
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: the C host has %d fds open, want %d: %s", what, got, want, d.h.FDs())
		}
		time.Sleep(10 * time.Millisecond) // polling /proc in the host: nothing to wait on
	}
}

// syncBuffer collects a child's output from its copying goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
