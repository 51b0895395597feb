package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/trace"
	"strings"
	"testing"
	"time"
)

// waiter sleeps n times: each sleep parks it and its timer wakes it once.
func waiter(n int, done chan<- struct{}) {
	for range n {
		time.Sleep(time.Millisecond) // the wake-ups being counted
	}
	close(done)
}

// A goroutine of ours that a timer wakes n times is counted n times,
// under the function that waited (not time.Sleep), as ours.
func TestCountsWakeupsWhereTheyWaited(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.out")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := trace.Start(f); err != nil {
		t.Fatal(err)
	}
	const n = 50
	done := make(chan struct{})
	go waiter(n, done)
	<-done
	trace.Stop()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	var out strings.Builder
	if err := run(path, 1000, &out); err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.Lines(out.String()) {
		if strings.HasSuffix(strings.TrimSpace(l), "wakeups.waiter") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no row for waiter in:\n%s", out.String())
	}
	fields := strings.Fields(line)
	var woken int
	if _, err := fmt.Sscan(fields[1], &woken); err != nil || woken != n || fields[4] != "ours" {
		t.Errorf("waiter's row %q: want %d wake-ups, owner ours", line, n)
	}
	t.Log(out.String())
}
