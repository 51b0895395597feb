package vpnlib

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWakeDebounce(t *testing.T) {
	t.Parallel()
	var rebinds atomic.Int32
	w := newWaker(func() { rebinds.Add(1) }, 5*time.Second)
	now := time.Unix(1000, 0)
	w.now = func() time.Time { return now }

	steps := []struct {
		name    string
		advance time.Duration
		want    bool
	}{
		{"first wake rebinds", 0, true},
		{"repeat ignored", time.Second, false},
		{"still inside the window", 3 * time.Second, false},
		{"after the window", 2 * time.Second, true},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		if got := w.wake(); got != s.want {
			t.Fatalf("%s: wake() = %v, want %v", s.name, got, s.want)
		}
	}
	if got := rebinds.Load(); got != 2 {
		t.Fatalf("%d rebinds, want 2", got)
	}
}

// TestWakeConcurrent checks that a burst of wakes rebinds exactly once.
func TestWakeConcurrent(t *testing.T) {
	t.Parallel()
	var rebinds atomic.Int32
	release := make(chan struct{})
	w := newWaker(func() { rebinds.Add(1); <-release }, time.Hour)
	var wg sync.WaitGroup
	var ran atomic.Int32
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w.wake() {
				ran.Add(1)
			}
		}()
	}
	close(release)
	wg.Wait()
	if rebinds.Load() != 1 || ran.Load() != 1 {
		t.Fatalf("rebinds %d, wakes that ran %d; want 1 and 1", rebinds.Load(), ran.Load())
	}
}
