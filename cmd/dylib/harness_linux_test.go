package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
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
	libPath = filepath.Join(dir, "libcodervpn.so")
	hostPath = filepath.Join(dir, "dlhost")
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	steps := [][]string{
		{"go", "build", "-buildmode=c-shared", "-trimpath",
			"-ldflags", "-X github.com/codervpn/codervpn/internal/buildinfo.Version=" + testVersion,
			"-o", libPath, "."},
		{cc, "-Wall", "-Wextra", "-Werror", "-O2", "-o", hostPath, "../../scripts/dlhost.c", "-ldl", "-lpthread"},
	}
	for _, s := range steps {
		cmd := exec.Command(s[0], s[1:]...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%s: %w\n%s", strings.Join(s, " "), err, out)
		}
	}
	// The name `make dylib` gives the header.
	if err := os.Rename(filepath.Join(dir, "libcodervpn.h"), filepath.Join(dir, "codervpn.h")); err != nil {
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

// dlHost is one running C host process (scripts/dlhost.c in serve mode) with
// the library loaded. Commands go over a SOCK_SEQPACKET socket, fds attached
// with SCM_RIGHTS, so the host process receives fds of its own and can close
// them right after coderStartVPN, as a careful NetworkExtension may.
type dlHost struct {
	t      *testing.T
	cmd    *exec.Cmd
	conn   *net.UnixConn
	stderr *syncBuffer
	exited chan struct{}
	mu     sync.Mutex // one command at a time
}

func startDLHost(t *testing.T) *dlHost {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "ctl"), os.NewFile(uintptr(fds[1]), "ctl-host")
	defer ours.Close()
	d := &dlHost{t: t, stderr: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(hostPath, libPath, "serve", "3")
	d.cmd.ExtraFiles = []*os.File{theirs}
	d.cmd.Stdout, d.cmd.Stderr = d.stderr, d.stderr
	if v := os.Getenv("CODERVPN_TEST_HOST_GODEBUG"); v != "" {
		// For looking into the library (gctrace=1, say): the host's Go
		// runtime gets the setting, and its output is shown as it comes.
		d.cmd.Env = append(os.Environ(), "GODEBUG="+v)
		d.cmd.Stdout, d.cmd.Stderr = os.Stderr, os.Stderr
	}
	err = d.cmd.Start()
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	c, err := net.FileConn(ours)
	if err != nil {
		t.Fatal(err)
	}
	d.conn = c.(*net.UnixConn)
	t.Cleanup(d.quit)
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

// call sends one command with files attached and returns the reply after
// "ok ". Any other reply, or the host dying, fails the test.
func (d *dlHost) call(command string, files ...*os.File) string {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_ = d.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, _, err := d.conn.WriteMsgUnix([]byte(command), oob, nil); err != nil {
		d.t.Fatalf("send %q to the C host: %v\nits output:\n%s", command, err, d.stderr)
	}
	buf := make([]byte, 4096)
	n, _, _, _, err := d.conn.ReadMsgUnix(buf, nil)
	if err != nil || n == 0 {
		d.t.Fatalf("no reply to %q from the C host (%v); its output:\n%s", command, err, d.stderr)
	}
	reply := string(buf[:n])
	rest, ok := strings.CutPrefix(reply, "ok")
	if !ok {
		d.t.Fatalf("C host answered %q to %q", reply, command)
	}
	return strings.TrimSpace(rest)
}

// start calls coderStartVPN(tun, read, write) in the host. Each argument is
// an *os.File (attached, so the host gets its own fd) or an int passed as is.
func (d *dlHost) start(args ...any) int32 {
	d.t.Helper()
	var words []string
	var files []*os.File
	for _, a := range args {
		switch v := a.(type) {
		case *os.File:
			words = append(words, "fd")
			files = append(files, v)
		case int:
			words = append(words, strconv.Itoa(v))
		default:
			d.t.Fatalf("start argument %T", a)
		}
	}
	return d.rc(d.call("start "+strings.Join(words, " "), files...))
}

func (d *dlHost) stop(h int32) int32 {
	d.t.Helper()
	return d.rc(d.call(fmt.Sprintf("stop %d", h)))
}

func (d *dlHost) rc(s string) int32 {
	d.t.Helper()
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		d.t.Fatalf("C host return code %q: %v", s, err)
	}
	return int32(v)
}

// hostStats is what the C host reports about its own process.
type hostStats struct {
	FDs         int
	RSSKB, HWMK int64
}

func (d *dlHost) stats() hostStats {
	d.t.Helper()
	var s hostStats
	if _, err := fmt.Sscanf(d.call("stats"), "fds=%d rss_kb=%d hwm_kb=%d", &s.FDs, &s.RSSKB, &s.HWMK); err != nil {
		d.t.Fatalf("parse stats: %v", err)
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
			d.t.Fatalf("%s: the C host has %d fds open, want %d: %s", what, got, want, d.call("fds"))
		}
		time.Sleep(10 * time.Millisecond) // polling /proc in the host: nothing to wait on
	}
}

// quit asks the host to exit and requires a clean exit.
func (d *dlHost) quit() {
	select {
	case <-d.exited:
	default:
		_ = d.conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := d.conn.Write([]byte("quit")); err == nil {
			_, _ = d.conn.Read(make([]byte, 64))
		}
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.exited
			d.t.Errorf("the C host did not exit on quit; its output:\n%s", d.stderr)
		}
	}
	_ = d.conn.Close()
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		d.t.Errorf("the C host exited with %d; its output:\n%s", code, d.stderr)
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
