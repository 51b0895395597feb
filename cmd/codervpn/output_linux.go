package main

import (
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/internal/status"
)

// output routes events to the person or script running us. For people,
// progress and the status table go to stdout and the tunnel's logs to
// stderr, so `codervpn up > status.txt` keeps the logs visible. When both
// are the same terminal, one sink writes everything, so that redrawing the
// table in place accounts for log lines printed below it. With --json every
// event is one JSON line on stdout.
type output struct {
	main status.Sink // progress, notices, peers (and logs when shared)
	logs status.Sink // forwarded logs and errors
	// dropPeers leaves out the live table (the demo prints it once at the end).
	dropPeers bool
}

// newOutput builds the sinks for stdout and stderr.
func newOutput(jsonMode bool, stdout, stderr io.Writer) *output {
	if jsonMode {
		j := status.NewJSON(stdout)
		return &output{main: j, logs: j}
	}
	tty := isTerminal(stdout)
	if tty && sameFile(stdout, stderr) {
		t := status.NewText(stdout, true)
		return &output{main: t, logs: t}
	}
	return &output{main: status.NewText(stdout, tty), logs: status.NewText(stderr, false)}
}

// Emit implements status.Sink.
func (o *output) Emit(e status.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	switch e.Type {
	case status.EventPeers:
		if !o.dropPeers {
			o.main.Emit(e)
		}
	case status.EventLog, status.EventError:
		o.logs.Emit(e)
	default:
		o.main.Emit(e)
	}
}

// progress and notice are shorthands for the common events.
func (o *output) progress(msg string) {
	o.Emit(status.Event{Type: status.EventProgress, Message: msg})
}

func (o *output) notice(msg string) {
	o.Emit(status.Event{Type: status.EventNotice, Message: msg})
}

// isTerminal reports whether w is a terminal, the only case in which the
// table is redrawn in place with escape sequences.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func sameFile(a, b io.Writer) bool {
	fa, ok1 := a.(*os.File)
	fb, ok2 := b.(*os.File)
	if !ok1 || !ok2 {
		return false
	}
	sa, err1 := fa.Stat()
	sb, err2 := fb.Stat()
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}
