package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/abi"
	"github.com/codervpn/codervpn/internal/dlhost"
)

// What the C calls a NetworkExtension uses instead of the environment and
// stderr do, seen from a C host: the memory limit, the log callback, the
// crash output.

// The limit a host sets is the one the runtime then has: each call returns
// the limit in force before it, so the second of two calls reads back what
// the first set.
func TestMemoryLimit(t *testing.T) {
	host := startDLHost(t)
	memlimit := func(b int64) int64 {
		t.Helper()
		v, err := host.h.SetMemoryLimit(b)
		if err != nil {
			t.Fatalf("%v; its output:\n%s", err, host.output)
		}
		return v
	}
	governed := memlimit(64 << 20)
	if governed < abi.DefaultMemoryFloor || governed == abi.MemoryLimitOff {
		t.Fatalf("the default limit was %d, want the governed floor %d or more", governed, abi.DefaultMemoryFloor)
	}
	for _, bad := range []int64{0, 50, abi.MinMemoryLimit - 1} {
		if got := memlimit(bad); got != int64(abi.CodeBadMemoryLimit) {
			t.Errorf("coderSetMemoryLimit(%d) = %d, want %d", bad, got, abi.CodeBadMemoryLimit)
		}
	}
	steps := []struct {
		set, want int64
	}{
		{96 << 20, 64 << 20},           // the bad calls changed nothing
		{abi.MemoryLimitOff, 96 << 20}, // no limit
		{abi.MinMemoryLimit, abi.MemoryLimitOff},
		{-1, abi.MinMemoryLimit}, // back to the default
		{-5, -1},                 // any negative is the default: want checked below
	}
	for _, s := range steps {
		got := memlimit(s.set)
		if s.want == -1 {
			if got < abi.DefaultMemoryFloor || got == abi.MemoryLimitOff {
				t.Fatalf("after coderSetMemoryLimit(-1) the limit was %d, want the governed floor %d or more", got, abi.DefaultMemoryFloor)
			}
			continue
		}
		if got != s.want {
			t.Fatalf("coderSetMemoryLimit(%d) = %d, want %d", s.set, got, s.want)
		}
	}
}

// logLines collects the lines the C host's log callback writes to a pipe.
type logLines struct {
	mu      sync.Mutex
	lines   []string
	eof     bool
	changed chan struct{}
}

// newLogPipe returns the write end to hand the host (close it after) and
// the collector reading the other end.
func newLogPipe(t *testing.T) (*os.File, *logLines) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	l := &logLines{changed: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.add(sc.Text(), false)
		}
		l.add("", true)
	}()
	t.Cleanup(func() {
		w.Close()
		r.Close()
		<-done
	})
	return w, l
}

func (l *logLines) add(line string, eof bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if eof {
		l.eof = true
	} else {
		l.lines = append(l.lines, line)
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// wait waits until cond holds for the lines so far (and whether the host
// closed its end), and returns them.
func (l *logLines) wait(t *testing.T, what string, cond func(lines []string, eof bool) bool) []string {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		l.mu.Lock()
		lines, eof, changed := append([]string(nil), l.lines...), l.eof, l.changed
		l.mu.Unlock()
		if cond(lines, eof) {
			return lines
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("the log callback never delivered %s; it wrote %d lines, the last: %q", what, len(lines), lines[max(0, len(lines)-5):])
		}
	}
}

// waitLine waits for a line at level with text in it.
func (l *logLines) waitLine(t *testing.T, level int32, text string) {
	t.Helper()
	prefix := strconv.Itoa(int(level)) + " "
	l.wait(t, fmt.Sprintf("%q at level %d", text, level), func(lines []string, _ bool) bool {
		for _, line := range lines {
			if strings.HasPrefix(line, prefix) && strings.Contains(line, text) {
				return true
			}
		}
		return false
	})
}

func (d *dlHost) setLogger(level int32, hold bool) *logLines {
	d.t.Helper()
	w, lines := newLogPipe(d.t)
	defer w.Close() // the host has its own
	rc, err := d.h.SetLogger(level, w, hold)
	if err != nil || rc != 0 {
		d.t.Fatalf("coderSetLogger(%d) = %d, %v; its output:\n%s", level, rc, err, d.output)
	}
	return lines
}

// noViolations fails if the callback was ever entered while it ran.
func noViolations(t *testing.T, lines []string) {
	t.Helper()
	for _, l := range lines {
		if strings.HasPrefix(l, "VIOLATION") {
			t.Fatalf("the C host's callback reports: %s", l)
		}
	}
}

// timed returns how long f took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// crashLib is the library built with the tests' exports (coderTestLog,
// coderTestCrash), built once when a test first asks for it.
var crashLib struct {
	once sync.Once
	path string
	err  error
}

func testExportsLib(t *testing.T) string {
	t.Helper()
	crashLib.once.Do(func() {
		dir := filepath.Join(buildDir, "testexports")
		if crashLib.err = os.Mkdir(dir, 0o755); crashLib.err == nil {
			crashLib.path, _, crashLib.err = dlhost.Build(dir, testVersion, "codervpn_testexports")
		}
	})
	if crashLib.err != nil {
		t.Fatalf("build the library with the tests' exports: %v", crashLib.err)
	}
	return crashLib.path
}
