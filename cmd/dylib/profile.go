//go:build codervpn_profile

package main

// The profiling build of the library (go build -tags codervpn_profile), for
// finding where an idle tunnel's wake-ups and memory go inside the host
// process that loads it (bench/RESULTS.md, issue 18). Shipped builds never
// have it. CODERVPN_PROFILE=dir,delay,window makes the library, delay
// after it is loaded, record an execution trace for window into
// dir/trace.out, then write dir/heap.pprof (after a collection; every
// allocation is sampled) and dir/goroutine.txt.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"time"
)

func init() {
	spec := os.Getenv("CODERVPN_PROFILE")
	if spec == "" {
		return
	}
	parts := strings.Split(spec, ",")
	if len(parts) != 3 {
		fmt.Fprintf(os.Stderr, "CODERVPN_PROFILE=%q: want dir,delay,window (e.g. /tmp/p,8s,10s)\n", spec)
		return
	}
	delay, err1 := time.ParseDuration(parts[1])
	window, err2 := time.ParseDuration(parts[2])
	if err1 != nil || err2 != nil {
		fmt.Fprintf(os.Stderr, "CODERVPN_PROFILE=%q: delay and window are durations (8s)\n", spec)
		return
	}
	// Every allocation, so that small owners (ours) show in the heap
	// profile; set before the tunnel allocates anything.
	runtime.MemProfileRate = 1
	go profileOnce(parts[0], delay, window)
}

// profileOnce records the trace and writes the profiles; errors go to
// stderr, since the library has no other place for them before a tunnel
// exists.
func profileOnce(dir string, delay, window time.Duration) {
	time.Sleep(delay) // the wait is the point: the window starts after the tunnel's start
	if err := writeTrace(filepath.Join(dir, "trace.out"), window); err != nil {
		fmt.Fprintf(os.Stderr, "CODERVPN_PROFILE trace: %v\n", err)
	}
	runtime.GC()
	if err := writeProfile(filepath.Join(dir, "heap.pprof"), "heap", 0); err != nil {
		fmt.Fprintf(os.Stderr, "CODERVPN_PROFILE heap: %v\n", err)
	}
	if err := writeProfile(filepath.Join(dir, "goroutine.txt"), "goroutine", 1); err != nil {
		fmt.Fprintf(os.Stderr, "CODERVPN_PROFILE goroutines: %v\n", err)
	}
}

func writeTrace(path string, window time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := trace.Start(f); err != nil {
		_ = f.Close()
		return err
	}
	time.Sleep(window) // the window being recorded
	trace.Stop()
	return f.Close()
}

func writeProfile(path, name string, debug int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, debug); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
