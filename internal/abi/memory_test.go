package abi

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
)

// The limit a host sets is the runtime's, the previous one comes back, and
// the governor no longer moves a fixed limit; negative restores it.
func TestSetMemoryLimit(t *testing.T) {
	original := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { SetMemoryLimit(original) }) // also stops the governor
	// Without GOMEMLIMIT at start, the default is the governed floor.
	t.Setenv("GOMEMLIMIT", "") // restores it after the test
	os.Unsetenv("GOMEMLIMIT")
	InitMemoryLimit()
	if got := debug.SetMemoryLimit(-1); got < DefaultMemoryFloor || got == MemoryLimitOff {
		t.Fatalf("the default limit is %d, want the governed floor %d or more", got, DefaultMemoryFloor)
	}

	for _, bad := range []int64{0, 1, 50, MinMemoryLimit - 1} {
		before := debug.SetMemoryLimit(-1)
		if got := SetMemoryLimit(bad); got != int64(CodeBadMemoryLimit) {
			t.Errorf("SetMemoryLimit(%d) = %d, want %d", bad, got, CodeBadMemoryLimit)
		}
		if after := debug.SetMemoryLimit(-1); after != before {
			t.Errorf("SetMemoryLimit(%d) changed the limit from %d to %d", bad, before, after)
		}
	}
	governed := debug.SetMemoryLimit(-1)
	if got := SetMemoryLimit(64 << 20); got != governed {
		t.Fatalf("SetMemoryLimit(64 MiB) = %d, want the governed limit %d", got, governed)
	}
	if got := SetMemoryLimit(MinMemoryLimit); got != 64<<20 {
		t.Fatalf("SetMemoryLimit(1 MiB) = %d, want the 64 MiB set before", got)
	}
	// A governor still running would lift a limit under the live heap
	// after a collection; a fixed one stays.
	live := make([]byte, 8<<20)
	runtime.GC()
	runtime.GC()
	runtime.KeepAlive(live)
	if got := SetMemoryLimit(MemoryLimitOff); got != MinMemoryLimit {
		t.Fatalf("the fixed 1 MiB limit became %d after collections with 8 MiB live", got)
	}
	if got := SetMemoryLimit(-1); got != MemoryLimitOff {
		t.Fatalf("SetMemoryLimit(-1) = %d, want MemoryLimitOff set before", got)
	}
	if got := SetMemoryLimit(-1); got < DefaultMemoryFloor || got == MemoryLimitOff {
		t.Fatalf("after SetMemoryLimit(-1) the limit is %d, want the governed floor %d or more", got, DefaultMemoryFloor)
	}
}

// A process started with GOMEMLIMIT keeps that value as its default.
func TestMemoryLimitFromEnvironment(t *testing.T) {
	original := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		memory.envSet = false
		SetMemoryLimit(original)
	})
	t.Setenv("GOMEMLIMIT", "96MiB")
	debug.SetMemoryLimit(96 << 20) // what the runtime did at start
	InitMemoryLimit()
	if got := SetMemoryLimit(64 << 20); got != 96<<20 {
		t.Fatalf("SetMemoryLimit(64 MiB) = %d, want GOMEMLIMIT's %d", got, 96<<20)
	}
	if got := SetMemoryLimit(-1); got != 64<<20 {
		t.Fatalf("SetMemoryLimit(-1) = %d, want 64 MiB", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 96<<20 {
		t.Fatalf("the default with GOMEMLIMIT=96MiB is %d", got)
	}
}
