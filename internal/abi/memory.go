package abi

import (
	"math"
	"os"
	"runtime/debug"
	"sync"

	"github.com/codervpn/codervpn/internal/memlimit"
)

// Bounds of the soft memory limit a host sets with coderSetMemoryLimit.
const (
	// DefaultMemoryFloor is the floor of the governed limit the library
	// keeps by default. A packet-tunnel extension on iOS is killed at
	// 50 MiB; with a soft limit below that the collector works harder as
	// the heap nears it instead of letting garbage pile up to twice the
	// live heap. The limit is governed (internal/memlimit): once the live
	// heap itself outgrows the floor, as with a user of a couple of
	// thousand agents, it follows the live heap with a quarter of headroom,
	// because a fixed limit under the live heap makes the collector run
	// back to back for nothing.
	DefaultMemoryFloor = 40 << 20
	// MinMemoryLimit is the smallest fixed limit accepted. The Go runtime
	// alone takes a few MiB: anything below is a unit mistake (50 meant as
	// MiB), and would make the collector run without pause.
	MinMemoryLimit = 1 << 20
	// MemoryLimitOff is "no limit" (Go's own value for GOMEMLIMIT=off).
	MemoryLimitOff = math.MaxInt64
)

// memory is the process's one memory-limit policy: the runtime's limit is
// process-wide, like the library's Go runtime.
var memory struct {
	mu      sync.Mutex
	stop    func() // stops the governor; nil when none runs
	envSet  bool   // the process started with GOMEMLIMIT
	fromEnv int64  // the limit it gave
}

// InitMemoryLimit applies the library's default when it is loaded: the
// governed limit, unless the process started with GOMEMLIMIT in its
// environment, whose value the runtime has already applied and which
// stays. (A host cannot set it with setenv before dlopen: the runtime
// reads the environment the process started with, hence
// coderSetMemoryLimit.)
func InitMemoryLimit() {
	memory.mu.Lock()
	defer memory.mu.Unlock()
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		memory.envSet, memory.fromEnv = true, debug.SetMemoryLimit(-1)
	}
	applyDefaultLocked()
}

func applyDefaultLocked() {
	if memory.envSet {
		debug.SetMemoryLimit(memory.fromEnv)
		return
	}
	memory.stop = memlimit.Govern(DefaultMemoryFloor)
}

// SetMemoryLimit is coderSetMemoryLimit: bytes >= MinMemoryLimit sets a
// fixed soft limit (MemoryLimitOff: none), a negative value goes back to
// the default of InitMemoryLimit. It returns the limit in force before the
// call, or CodeBadMemoryLimit (nothing changed) for 0 up to
// MinMemoryLimit-1.
func SetMemoryLimit(bytes int64) int64 {
	if bytes >= 0 && bytes < MinMemoryLimit {
		return int64(CodeBadMemoryLimit)
	}
	memory.mu.Lock()
	defer memory.mu.Unlock()
	if memory.stop != nil {
		memory.stop()
		memory.stop = nil
	}
	prev := debug.SetMemoryLimit(-1)
	if bytes < 0 {
		applyDefaultLocked()
	} else {
		debug.SetMemoryLimit(bytes)
	}
	return prev
}
