package main

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
)

// Milestones of a session, in the order a healthy one reaches them. The demo
// prints when each first happened, which is how a newcomer sees where the
// time goes (and a maintainer sees a regression).
const (
	milestoneDeployment   = "deployment started"
	milestoneDevice       = "device created"
	milestoneLibrary      = "library loaded"
	milestoneHandshake    = "handshake"
	milestoneSettings     = "settings applied"
	milestoneStarted      = "StartResponse"
	milestonePeers        = "first peer update"
	milestoneFirstByte    = "first byte"
	milestoneTransfer     = "transfer done"
	milestonePinged       = "agents pinged"
	milestoneStopResponse = "StopResponse"
	milestoneStopped      = "stopped"
)

// timeline records the first time each milestone happened. A nil *timeline
// records nothing, so code paths that do not print one need no checks.
type timeline struct {
	start time.Time
	mu    sync.Mutex
	marks map[string]timelineMark
}

type timelineMark struct {
	at     time.Time
	detail string
}

func newTimeline() *timeline {
	return &timeline{start: time.Now(), marks: make(map[string]timelineMark)}
}

// mark records name now, unless it was recorded before.
func (t *timeline) mark(name, detail string) {
	t.markAt(name, time.Now(), detail)
}

// markAt records name at a time measured elsewhere (curl's own clock).
func (t *timeline) markAt(name string, at time.Time, detail string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.marks[name]; !ok {
		t.marks[name] = timelineMark{at: at, detail: detail}
	}
}

// print writes the milestones in the order they happened, as offsets from
// the start, each with the step since the one before.
func (t *timeline) print(w io.Writer) {
	t.mu.Lock()
	names := make([]string, 0, len(t.marks))
	for n := range t.marks {
		names = append(names, n)
	}
	marks := t.marks
	sort.Slice(names, func(i, j int) bool { return marks[names[i]].at.Before(marks[names[j]].at) })
	prev := t.start
	for _, n := range names {
		m := marks[n]
		fmt.Fprintf(w, "  %9s  %-18s %10s  %s\n", fmtMillis(m.at.Sub(t.start)), n, "+"+fmtMillis(m.at.Sub(prev)), m.detail)
		prev = m.at
	}
	t.mu.Unlock()
}

// fmtMillis prints a duration for the timeline: milliseconds below a
// second, seconds above.
func fmtMillis(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
