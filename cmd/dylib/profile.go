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

	"github.com/codervpn/codervpn/internal/profwindow"
)

func init() {
	end, err := profwindow.Start("CODERVPN_PROFILE")
	if err != nil {
		// stderr: the library has no other place for this before a tunnel
		// exists.
		fmt.Fprintln(os.Stderr, err)
		return
	}
	endProfile = end // the first coderStopVPN ends the window early
}
