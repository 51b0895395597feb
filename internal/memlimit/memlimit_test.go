package memlimit

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestLimit(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name                 string
		floor, live, nonHeap int64
		want                 int64
	}{
		{"small heap keeps the floor", 40 * mib, 8 * mib, 6 * mib, 40 * mib},
		{"large heap gets a quarter on top", 40 * mib, 60 * mib, 8 * mib, 60*mib + 15*mib + 8*mib},
		{"headroom is never under minHeadroom", 1 * mib, 8 * mib, 2 * mib, 8*mib + minHeadroom + 2*mib},
		{"empty runtime keeps the floor", 40 * mib, 0, 0, 40 * mib},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := limitFor(tc.floor, tc.live, tc.nonHeap); got != tc.want {
				t.Errorf("limitFor(%d, %d, %d) = %d, want %d", tc.floor, tc.live, tc.nonHeap, got, tc.want)
			}
		})
	}
}

var sink []byte

// churn allocates n bytes of short-lived garbage and returns how many
// collections ran meanwhile.
func churn(n int) uint64 {
	before := gcCycles()
	for range n / (64 << 10) {
		sink = make([]byte, 64<<10)
	}
	sink = nil
	return gcCycles() - before
}

// With a live heap far over the floor, a fixed limit makes the collector
// run nearly continuously; the governed limit lifts itself above the live
// heap after a collection and the same garbage costs a handful of cycles.
// Without the governor the limit never leaves the floor and the wait fails.
// Not parallel: the memory limit is the process's.
func TestGovernStopsThrashing(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	const floor = 8 << 20
	live := make([][]byte, 48) // 48 MiB that stays reachable
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	defer runtime.KeepAlive(live)

	debug.SetMemoryLimit(floor)
	fixed := churn(96 << 20)

	stop := Govern(floor)
	defer stop()
	runtime.GC()
	deadline := time.Now().Add(10 * time.Second)
	for debug.SetMemoryLimit(-1) < 48<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("limit still %d MiB after a collection with 48 MiB live", debug.SetMemoryLimit(-1)>>20)
		}
		runtime.GC() // the hook runs in the finalizer goroutine, after the cycle
	}
	governed := churn(96 << 20)
	t.Logf("96 MiB of garbage over 48 MiB live: %d collections with a fixed %d MiB limit, %d governed (limit now %d MiB)",
		fixed, floor>>20, governed, debug.SetMemoryLimit(-1)>>20)
	// The fixed count depends on how the runtime paces a collector that can
	// never get under the limit, so it is context, not a bound; the governed
	// count depends only on the headroom (96 MiB / 12 MiB ≈ 8).
	if governed > 16 {
		t.Errorf("governed limit: %d collections for 96 MiB of garbage, want at most 16 (fixed limit: %d)", governed, fixed)
	}
}

// After stop, collections no longer move the limit.
func TestGovernStop(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	stop := Govern(1 << 20)
	stop()
	debug.SetMemoryLimit(math.MaxInt64 - 1)
	live := make([]byte, 16<<20)
	for range 3 {
		runtime.GC()
	}
	runtime.KeepAlive(live)
	// The finalizer goroutine may still hold one queued hook; it must see
	// the stop and leave the limit alone.
	runtime.GC()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64-1 {
		t.Errorf("limit moved to %d after stop", got)
	}
}

// A limit lifted by a large live heap comes back down once that heap is
// garbage, even when nothing allocates enough to start a collection: the
// recheck forces one.
func TestGovernLowersTheLimitWhenIdle(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	defer func(d time.Duration) { recheckAfter = d }(recheckAfter)
	recheckAfter = 20 * time.Millisecond
	const floor = 8 << 20
	stop := Govern(floor)
	defer stop()
	live := make([][]byte, 48)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	deadline := time.Now().Add(10 * time.Second)
	for debug.SetMemoryLimit(-1) < 48<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("limit still %d MiB with 48 MiB live", debug.SetMemoryLimit(-1)>>20)
		}
		runtime.GC()
	}
	runtime.KeepAlive(live)
	live = nil
	deadline = time.Now().Add(10 * time.Second)
	for debug.SetMemoryLimit(-1) > 24<<20 { // floor, or a few MiB of test runtime plus headroom
		if time.Now().After(deadline) {
			t.Fatalf("limit still %d MiB 10 s after the live heap became garbage", debug.SetMemoryLimit(-1)>>20)
		}
		time.Sleep(10 * time.Millisecond) // polling interval; no collection is started here
	}
}

// A limit that stays lifted over a live heap that does not change (an idle
// tunnel: the engine's packet buffers count as live) is rechecked ever
// more rarely: each recheck that finds it where it was waits twice as long.
// (Every recheck forced a collection, a steady 12 a minute when idle.)
func TestGovernBacksOffWhileTheLimitHolds(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	defer func(d time.Duration) { recheckAfter = d }(recheckAfter)
	recheckAfter = 20 * time.Millisecond
	const floor = 8 << 20
	stop := Govern(floor)
	defer stop()
	live := make([][]byte, 32)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	runtime.GC()
	deadline := time.Now().Add(10 * time.Second)
	for debug.SetMemoryLimit(-1) < 32<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("limit still %d MiB with 32 MiB live", debug.SetMemoryLimit(-1)>>20)
		}
		runtime.GC()
	}
	before := gcCycles()
	time.Sleep(50 * recheckAfter) // the window in which the rechecks are counted
	n := gcCycles() - before
	runtime.KeepAlive(live)
	// Waits of 20, 40, 80, 160, 320, 640 ms fit six rechecks in the second;
	// without the backoff there were about fifty.
	if n > 12 {
		t.Errorf("%d collections in %v over a steady live heap, want at most 12", n, 50*recheckAfter)
	}
	t.Logf("%d collections in %v", n, 50*recheckAfter)
}
