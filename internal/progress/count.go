// Package progress is a count that one goroutine advances and others wait
// on: how far a reader has got through what arrived, or a worker through
// its queue. A waiter gives up when its context ends.
package progress

import (
	"context"
	"sync"
)

// Count is a monotonic count. The zero value is 0 and ready; it is safe for
// concurrent use, and advancing it costs no allocation unless someone waits.
type Count struct {
	mu    sync.Mutex
	n     uint64
	moved chan struct{} // made by a waiter, closed by the next advance
}

// Add advances the count by d.
func (c *Count) Add(d uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += d
	c.wakeLocked()
}

// Raise advances the count to n, if n is beyond it.
func (c *Count) Raise(n uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.n {
		c.n = n
		c.wakeLocked()
	}
}

// Load returns the count.
func (c *Count) Load() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// Await waits until the count reaches target, or stop is closed (the
// counting is over: true as well), or ctx ends (false).
func (c *Count) Await(ctx context.Context, target uint64, stop <-chan struct{}) bool {
	for {
		c.mu.Lock()
		if c.n >= target {
			c.mu.Unlock()
			return true
		}
		if c.moved == nil {
			c.moved = make(chan struct{})
		}
		moved := c.moved
		c.mu.Unlock()
		select {
		case <-moved:
		case <-stop:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

func (c *Count) wakeLocked() {
	if c.moved != nil {
		close(c.moved)
		c.moved = nil
	}
}
