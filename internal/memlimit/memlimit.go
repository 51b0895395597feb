// Package memlimit keeps the Go runtime's soft memory limit low while the
// live heap is small, without letting it starve the program when the live
// heap is large.
//
// A fixed soft limit (debug.SetMemoryLimit) is the right tool for a process
// that must stay small: below it the collector runs as GOGC says, near it the
// collector runs more often so that garbage never pushes memory past it. But
// when the live heap itself outgrows the limit, as it does for a tunnel to a
// couple of thousand agents, every allocation is over the limit and the
// collector runs back to back, taking up to half the CPU (the runtime's own
// cap) for no memory saved. Govern keeps the floor and, after every
// collection, lifts the limit to a fixed headroom above what is live, so the
// collector runs more often than GOGC alone would ask but never continuously.
package memlimit

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// headroomDivisor and minHeadroom set how much a governed limit leaves above the live heap and the
// runtime's other memory once that is over the floor: a quarter of the live
// heap, and at least minHeadroom. A 2,000-agent start reaches its full
// PeerUpdate in ~0.45 of the time it takes under the fixed limit, for
// 11–15 KiB more per agent (bench/RESULTS.md); half the live heap was ~15 %
// faster again for ~5 KiB more per agent.
const (
	headroomDivisor = 4
	minHeadroom     = 4 << 20
)

// limitFor is the soft memory limit Govern sets for the given floor and the
// runtime's state after a collection: the floor, or the live heap plus its
// headroom plus the memory that is not heap (stacks, runtime metadata),
// whichever is higher.
func limitFor(floor, liveHeap, nonHeap int64) int64 {
	headroom := max(liveHeap/headroomDivisor, minHeadroom)
	return max(floor, liveHeap+headroom+nonHeap)
}

// Recheck is how long a lifted limit may go without a collection before
// the governor forces one. The limit can only come down after a collection
// measures the live heap again, and an idle program may not collect for two
// minutes: without the recheck, a burst of work (a start with thousands of
// peers) would leave the limit, and the memory under it, up long after the
// live heap shrank back.
//
// While rechecks find the limit where it was, each waits twice as long as
// the one before, up to recheckMax; a limit that moves brings the wait back
// to Recheck. Why: a tunnel's live heap sits above the floor even when idle
// (the engine's packet buffers count as live), so the limit stays lifted,
// and a collection forced every 5 s was the idle library's largest wake-up
// of its own (bench/RESULTS.md, issue 18).
const Recheck = 5 * time.Second

// recheckMax is the longest wait between rechecks: the runtime forces a
// collection every two minutes anyway.
const recheckMax = 2 * time.Minute

var (
	mu       sync.Mutex
	governed bool
	floor    int64
	gen      uint64 // bumped by every Govern and stop; stale hooks retire
	recheck  *time.Timer
	// recheckAfter is Recheck; tests shorten it.
	recheckAfter = Recheck
	// wait is the next recheck's delay, zero for recheckAfter; lastLimit is
	// the limit the last update set.
	wait      time.Duration
	lastLimit int64
)

// Govern sets a soft memory limit of at least floor bytes and keeps it
// updated after every garbage collection until stop is called. stop leaves
// the last limit in place; the process keeps one governor at a time.
func Govern(f int64) (stop func()) {
	mu.Lock()
	gen++
	mine := gen
	governed, floor = true, f
	wait, lastLimit = 0, 0
	mu.Unlock()
	update()
	arm(mine)
	return func() {
		mu.Lock()
		defer mu.Unlock()
		if gen == mine {
			gen++
			governed = false
			if recheck != nil {
				recheck.Stop()
				recheck = nil
			}
		}
	}
}

// sentinel is garbage the moment it is allocated; its finalizer runs after
// the collection that finds it, which makes it a once-per-cycle hook. It is
// larger than the runtime's 16-byte tiny-object blocks, which would tie its
// lifetime to whatever shares its block.
type sentinel struct{ _ [32]byte }

func arm(g uint64) {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		mu.Lock()
		current := governed && gen == g
		mu.Unlock()
		if !current {
			return
		}
		update()
		arm(g)
	})
}

var sampleNames = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

// update sets the limit from the runtime's state after the last collection.
func update() {
	s := make([]metrics.Sample, len(sampleNames))
	for i, n := range sampleNames {
		s[i].Name = n
	}
	metrics.Read(s)
	v := func(i int) int64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(s[i].Value.Uint64())
	}
	live := v(0)
	nonHeap := max(0, v(1)-v(2)-v(3)-v(4)-v(5))
	mu.Lock()
	defer mu.Unlock()
	if !governed {
		return
	}
	limit := limitFor(floor, live, nonHeap)
	debug.SetMemoryLimit(limit)
	if moved(lastLimit, limit) {
		wait = 0
		if recheck != nil && recheck.Stop() {
			recheck = nil // re-armed below at Recheck
		}
	}
	lastLimit = limit
	if limit > floor {
		scheduleRecheckLocked()
	}
}

// moved reports whether a limit changed by more than 1/32 (or from none):
// the live heap between idle collections wanders by less.
func moved(from, to int64) bool {
	d := to - from
	return from == 0 || max(d, -d) > to/32
}

// scheduleRecheckLocked arms the recheck unless one is pending. It runs a
// collection if none ran in the meantime; if one did, its hook already
// updated the limit, and the recheck only re-arms while the limit is lifted.
func scheduleRecheckLocked() {
	if recheck != nil {
		return
	}
	if wait == 0 {
		wait = recheckAfter
	} else {
		wait = min(2*wait, max(recheckMax, recheckAfter))
	}
	cycles := gcCycles()
	var t *time.Timer
	t = time.AfterFunc(wait, func() {
		mu.Lock()
		if recheck != t {
			mu.Unlock() // stopped too late and replaced by update
			return
		}
		recheck = nil
		if !governed {
			mu.Unlock()
			return
		}
		if gcCycles() != cycles {
			if debug.SetMemoryLimit(-1) > floor {
				scheduleRecheckLocked()
			}
			mu.Unlock()
			return
		}
		mu.Unlock()
		runtime.GC() // its hook sets the limit and, if still lifted, re-arms
	})
	recheck = t
}

func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
