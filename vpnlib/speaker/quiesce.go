package speaker

import (
	"context"

	"github.com/codervpn/codervpn/internal/progress"
)

// readProgress tells Quiesce how far the reader has got: how many frames it
// has taken from its buffer (counted before each is handed to a handler, so
// a handler that calls Quiesce already counts its own frame), and how many
// it had taken when it last found its buffer empty.
type readProgress struct {
	dispatched, caughtUp progress.Count
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
	return s.read.caughtUp.Await(ctx, s.read.dispatched.Load(), s.readDone)
}
