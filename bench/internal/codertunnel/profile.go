package main

import (
	"fmt"
	"os"

	"github.com/codervpn/codervpn/internal/profwindow"
)

// profileEnv profiles this process over a window, as CODERVPN_PROFILE does
// in the profiling build of our library, so that the bench can profile
// both tunnels over the same part of a run: dir,delay,window[,kinds]
// (internal/profwindow), delay counted from this process's start.
const profileEnv = "CODERTUNNEL_PROFILE"

// startProfile starts the window CODERTUNNEL_PROFILE asks for, if any. The
// returned function ends the window early (at SIGTERM, so that the
// bench's end of the process keeps what was recorded) and waits until
// the files are written.
func startProfile() (finish func(), err error) {
	v := os.Getenv(profileEnv)
	if v == "" {
		return func() {}, nil
	}
	spec, err := profwindow.Parse(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	spec.Prepare()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		if err := spec.Record(stop); err != nil {
			fmt.Fprintf(os.Stderr, "codertunnel: %s: %v\n", profileEnv, err)
		}
	}()
	return func() {
		close(stop)
		<-done
	}, nil
}
