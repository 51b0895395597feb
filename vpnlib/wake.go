package vpnlib

import (
	"sync"
	"time"
)

// wakeDebounce is the least time between two wake-triggered rebinds. A rebind
// throws away every peer path the engine trusts, and an OS often reports one
// wake several times, so repeats within this window are ignored.
const wakeDebounce = 5 * time.Second

// waker rebinds the engine's sockets and re-STUNs when the host reports that
// the system woke, at most once per debounce window.
type waker struct {
	rebind   func() // tailnet.Conn.Rebind (new sockets, a fresh STUN), then new WireGuard sessions
	debounce time.Duration
	now      func() time.Time

	mu      sync.Mutex
	last    time.Time
	busy    bool
	closed  bool
	running sync.WaitGroup // a rebind in progress; Add only while !closed
}

func newWaker(rebind func(), debounce time.Duration) *waker {
	return &waker{rebind: rebind, debounce: debounce, now: time.Now}
}

// wake rebinds unless a rebind ran within the debounce window or is running
// now. It reports whether it rebound. rebind is called without the lock.
func (w *waker) wake() bool {
	w.mu.Lock()
	now := w.now()
	if w.closed || w.busy || (!w.last.IsZero() && now.Sub(w.last) < w.debounce) {
		w.mu.Unlock()
		return false
	}
	w.busy = true
	w.last = now
	w.running.Add(1)
	w.mu.Unlock()

	w.rebind()
	w.running.Done()

	w.mu.Lock()
	w.busy = false
	w.mu.Unlock()
	return true
}

// close makes later wakes do nothing and waits for a rebind in progress:
// the session calls it before closing the engine, so that a Wake handled
// while a Stop halts the session never calls into a closed engine.
func (w *waker) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.running.Wait()
}
