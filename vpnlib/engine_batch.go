package vpnlib

import (
	"context"
	"sync"

	"github.com/coder/coder/v2/tailnet/proto"
)

// peerBatcher hands the coordinator's peer updates to the engine from its
// own goroutine, all that arrived meanwhile in one call, in the order they
// came, and marks every peer lost at the point in that order where the
// coordinator was lost.
//
// Why: each UpdatePeers call makes the engine build the status of every
// peer it has, and Coder's coordination controller makes one call per
// coordinator response and reads the next only when it returns. A start
// with two thousand agents brings about as many responses: applied one by
// one that is quadratic, the controller fell seconds behind, the
// coordinator found its 512-response buffer for us full and closed our
// connection, and every peer was marked lost, removed and added again after
// the reconnect. Batched, the controller reads as fast as the coordinator
// writes and the engine sees a handful of calls.
type peerBatcher struct {
	apply func([]*proto.CoordinateResponse_PeerUpdate) error
	lost  func()        // marks every peer the engine has lost
	wake  chan struct{} // one pending wake-up for run

	mu      sync.Mutex
	pending []batchStep
	err     error // the first error apply returned; every later add returns it
	// coordinating is set while a coordination runs whose loss has not
	// been reported; owed counts loss reports already queued by
	// coordinationStarted, to be ignored when they come.
	coordinating bool
	owed         int

	applyMu sync.Mutex // one flush at a time, so steps apply in order
}

// batchStep is updates to apply and, if lost is set, every peer to mark
// lost after them.
type batchStep struct {
	updates []*proto.CoordinateResponse_PeerUpdate
	lost    bool
}

func newPeerBatcher(apply func([]*proto.CoordinateResponse_PeerUpdate) error, lost func()) *peerBatcher {
	return &peerBatcher{apply: apply, lost: lost, wake: make(chan struct{}, 1)}
}

// add queues updates for the engine and returns at once. It returns the
// error of an earlier batch, if any, so that the controller ends its
// coordination as it would have had the call failed directly.
func (b *peerBatcher) add(updates []*proto.CoordinateResponse_PeerUpdate) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	if len(updates) == 0 {
		return nil
	}
	if n := len(b.pending); n == 0 || b.pending[n-1].lost {
		b.pending = append(b.pending, batchStep{})
	}
	last := &b.pending[len(b.pending)-1]
	last.updates = append(last.updates, updates...)
	b.wakeLocked()
	return nil
}

// wakeLocked makes run flush soon; b.mu is held.
func (b *peerBatcher) wakeLocked() {
	select {
	case b.wake <- struct{}{}:
	default: // run is already due to flush
	}
}

// coordinationStarted notes that the controller started a coordination
// (it sets the node callback before it reads anything). If the previous
// one has not reported its loss yet, the loss is queued now, ahead of
// anything the new one sends, and the late report is ignored.
func (b *peerBatcher) coordinationStarted() {
	b.mu.Lock()
	early := b.coordinating
	b.coordinating = true
	if early {
		b.owed++
	}
	b.mu.Unlock()
	if early {
		b.queueLost()
	}
}

// coordinationLost marks every peer lost after the updates added before
// the call and before any added after it (unless coordinationStarted did
// already), and returns once it is done.
//
// Why the order matters: the controller reports a lost coordinator from
// the old connection's goroutine, and it may already be handing us the new
// connection's nodes: the report can come after the new connection
// started, and a flush in flight can hold it back while the new nodes
// queue. Marked lost after them, peers the new connection had just sent
// were taken for gone and removed: at 2,000 agents under load, hundreds
// never came back (a stub agent never acknowledges, so nothing resent
// their node).
func (b *peerBatcher) coordinationLost() {
	b.mu.Lock()
	if b.owed > 0 {
		b.owed--
		b.mu.Unlock()
		return
	}
	b.coordinating = false
	b.mu.Unlock()
	b.queueLost()
	b.flush()
}

// queueLost queues marking every peer lost after what is queued now, and
// has run apply it even if no update follows.
func (b *peerBatcher) queueLost() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := len(b.pending); n > 0 && !b.pending[n-1].lost {
		b.pending[n-1].lost = true
	} else {
		b.pending = append(b.pending, batchStep{lost: true})
	}
	b.wakeLocked()
}

// flush applies everything queued so far. When it returns, every update
// added before the call has reached the engine.
func (b *peerBatcher) flush() {
	b.applyMu.Lock()
	defer b.applyMu.Unlock()
	b.mu.Lock()
	steps := b.pending
	b.pending = nil
	b.mu.Unlock()
	for _, s := range steps {
		if len(s.updates) > 0 && b.applyOK() {
			if err := b.apply(s.updates); err != nil {
				b.mu.Lock()
				if b.err == nil {
					b.err = err
				}
				b.mu.Unlock()
			}
		}
		if s.lost {
			b.lost()
		}
	}
}

// applyOK reports whether no earlier batch failed: after an engine error
// nothing more is applied.
func (b *peerBatcher) applyOK() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err == nil
}

// run applies queued updates as they come until ctx ends.
func (b *peerBatcher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
			b.flush()
		}
	}
}
