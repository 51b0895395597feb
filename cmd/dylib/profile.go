//go:build codervpn_profile

package main

// The profiling build of the library (go build -tags codervpn_profile), for
// finding where a tunnel's CPU, wake-ups and memory go inside the host
// process that loads it (bench/RESULTS.md, issue 18). Shipped builds never
// have it. CODERVPN_PROFILE=dir,delay,window[,kinds] makes the library,
// delay after it is loaded, record over window into dir: an execution
// trace and a heap profile by default, a CPU profile with kinds=cpu
// (internal/profwindow says which files). The first coderStopVPN ends
// the window early, so that a window longer than the run still writes.

import (
	"fmt"
	"os"
	"sync"

	"github.com/codervpn/codervpn/internal/profwindow"
)

func init() {
	v := os.Getenv("CODERVPN_PROFILE")
	if v == "" {
		return
	}
	spec, err := profwindow.Parse(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "CODERVPN_PROFILE: %v\n", err)
		return
	}
	spec.Prepare() // before the tunnel allocates anything
	stop, done := make(chan struct{}), make(chan struct{})
	var once sync.Once
	endProfile = func() { // the first coderStopVPN ends the window early
		once.Do(func() { close(stop) })
		<-done
	}
	go func() {
		defer close(done)
		// stderr: the library has no other place for this before a tunnel
		// exists.
		if err := spec.Record(stop); err != nil {
			fmt.Fprintf(os.Stderr, "CODERVPN_PROFILE: %v\n", err)
		}
	}()
}
