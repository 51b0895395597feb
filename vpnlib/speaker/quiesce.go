package speaker

import (
	"context"
	"sync"
)

// readProgress tells Quiesce how far the reader has got: how many frames it
// has taken from its buffer (counted before each is handed to a handler, so
// a handler that calls Quiesce already counts its own frame), and how many
// it had taken when it last found its buffer empty.
type readProgress struct {
	mu         sync.Mutex
	dispatched uint64
	caughtAt   uint64
	idle       chan struct{} // closed (and replaced) whenever caughtAt moves
}

func (p *readProgress) dispatchedOne() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dispatched++
}

// caughtUp records that everything read so far has been dispatched.
func (p *readProgress) caughtUp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.caughtAt = p.dispatched
	close(p.idle)
	p.idle = make(chan struct{})
}

// Quiesce waits until the reader has dispatched everything that arrived
// together with the frames dispatched so far: frames a peer wrote in one go
// may sit in the read buffer after the first of them was handled. It returns
// false if ctx ends first (a peer in the middle of writing a frame), true
// otherwise, also when the session is over.
//
// Why: a tunnel that stops sends its StopResponse as the final frame; a
// request the manager pipelined right behind the Stop must reach the
// tunnel's queues before that, or it is never answered.
func (s *Speaker[S, R]) Quiesce(ctx context.Context) bool {
	p := &s.read
	p.mu.Lock()
	target := p.dispatched
	p.mu.Unlock()
	for {
		p.mu.Lock()
		done, idle := p.caughtAt >= target, p.idle
		p.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-idle:
		case <-s.readDone:
			return true
		case <-ctx.Done():
			return false
		}
	}
}
