// Package profwindow records profiles of the running process over one
// window of time, for the profiling build of the library (cmd/dylib,
// -tags codervpn_profile) and the bench's copy of Coder's tunnel
// (bench/internal/codertunnel), so that both processes of
// BenchmarkVersusCoder can be profiled over the same part of a run
// (bench/RESULTS.md). Shipped builds never link it.
//
// A window is given as dir,delay,window[,kinds]: delay after the process
// asked (its start), record for window, write the files into dir. kinds
// is a '+'-separated list of
//
//	trace  an execution trace over the window (dir/trace.out)
//	cpu    a CPU profile over the window (dir/cpu.pprof)
//	heap   every allocation sampled from the start (dir/heap.pprof, after
//	       a collection at the window's end)
//
// and is trace+heap when left out. A goroutine dump (dir/goroutine.txt)
// is always written at the end. heap makes every allocation pay for a
// stack walk, so a CPU profile taken with it shows the sampling, not the
// process: ask for cpu alone to see where a transfer's CPU goes.
package profwindow

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"sync"
	"time"
)

// Spec is one parsed window.
type Spec struct {
	Dir           string
	Delay, Window time.Duration
	Trace, CPU    bool
	Heap          bool
}

// Parse reads dir,delay,window[,kinds].
func Parse(s string) (Spec, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 && len(parts) != 4 {
		return Spec{}, fmt.Errorf("%q: want dir,delay,window[,kinds] (e.g. /tmp/p,8s,10s,cpu)", s)
	}
	sp := Spec{Dir: parts[0]}
	if sp.Dir == "" {
		return Spec{}, fmt.Errorf("%q: no directory", s)
	}
	var err error
	if sp.Delay, err = time.ParseDuration(parts[1]); err != nil {
		return Spec{}, fmt.Errorf("%q: the delay: %w", s, err)
	}
	if sp.Window, err = time.ParseDuration(parts[2]); err != nil {
		return Spec{}, fmt.Errorf("%q: the window: %w", s, err)
	}
	if sp.Delay < 0 || sp.Window <= 0 {
		return Spec{}, fmt.Errorf("%q: the delay must not be negative nor the window empty", s)
	}
	kinds := "trace+heap"
	if len(parts) == 4 {
		kinds = parts[3]
	}
	for _, k := range strings.Split(kinds, "+") {
		switch k {
		case "trace":
			sp.Trace = true
		case "cpu":
			sp.CPU = true
		case "heap":
			sp.Heap = true
		default:
			return Spec{}, fmt.Errorf("%q: unknown kind %q (trace, cpu, heap)", s, k)
		}
	}
	return sp, nil
}

// Prepare sets what must be set before the process allocates what is to
// be seen: the allocation sampling rate for a heap profile. Call it as
// early as possible (an init).
func (s Spec) Prepare() {
	if s.Heap {
		runtime.MemProfileRate = 1 // every allocation, so that small owners show
	}
}

// Record waits out the delay (none when it is zero), records over the window and writes the
// files. A close of stop ends the wait or the window early (the files are
// still written), so that a process told to exit keeps what it recorded;
// a nil stop never closes. The error joins every file's failure.
func (s Spec) Record(stop <-chan struct{}) error {
	t := time.NewTimer(s.Delay)
	if s.Delay > 0 { // a zero delay opens the window at once, whatever stop says
		select { // the wait is the point: the window starts after the process's start
		case <-t.C:
		case <-stop:
			t.Stop()
			return errors.New("stopped before the window opened")
		}
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("profile directory: %w", err)
	}
	var errs []error
	var closers []func() error
	if s.Trace {
		c, err := start(filepath.Join(s.Dir, "trace.out"), trace.Start, trace.Stop)
		errs = append(errs, wrap("trace", err))
		closers = append(closers, c)
	}
	if s.CPU {
		c, err := start(filepath.Join(s.Dir, "cpu.pprof"), pprof.StartCPUProfile, pprof.StopCPUProfile)
		errs = append(errs, wrap("cpu", err))
		closers = append(closers, c)
	}
	t.Reset(s.Window)
	select { // the window being recorded
	case <-t.C:
	case <-stop:
		t.Stop()
	}
	for _, c := range closers {
		errs = append(errs, c())
	}
	if s.Heap {
		runtime.GC() // the heap profile shows the state as of the last collection
		errs = append(errs, wrap("heap", writeProfile(filepath.Join(s.Dir, "heap.pprof"), "heap", 0)))
	}
	errs = append(errs, wrap("goroutines", writeProfile(filepath.Join(s.Dir, "goroutine.txt"), "goroutine", 1)))
	return errors.Join(errs...)
}

// start creates path and begins a recording into it; the returned function
// ends it and closes the file, and is never nil.
func start(path string, begin func(w io.Writer) error, end func()) (func() error, error) {
	noop := func() error { return nil }
	f, err := os.Create(path)
	if err != nil {
		return noop, err
	}
	if err := begin(f); err != nil {
		_ = f.Close()
		return noop, err
	}
	return func() error {
		end()
		return wrap(filepath.Base(path), f.Close())
	}, nil
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
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

// Start records the window the environment variable env asks for, if it
// is set, from now on a goroutine of its own. end ends the window early
// (the first call; any call waits) and returns once the files are
// written: a process about to exit calls it so that it keeps what was
// recorded. With env unset, end does nothing. A failure to record goes
// to stderr, named by env: the processes that profile themselves this way
// (the library's profiling build, the bench's copy of Coder's tunnel)
// have no other place for it before they run anything.
func Start(env string) (end func(), err error) {
	v := os.Getenv(env)
	if v == "" {
		return func() {}, nil
	}
	spec, err := Parse(v)
	if err != nil {
		return func() {}, fmt.Errorf("%s: %w", env, err)
	}
	spec.Prepare()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		if err := spec.Record(stop); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", env, err)
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(stop) })
		<-done
	}, nil
}
