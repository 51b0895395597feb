package vpnlib

import (
	"context"
	"sync"

	"github.com/coder/coder/v2/tailnet/proto"
)

// peerBatcher hands the coordinator's peer updates to the engine from its
// own goroutine, all that arrived meanwhile in one call, in the order they
// came.
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
	wake  chan struct{} // one pending wake-up for run

	mu      sync.Mutex
	pending []*proto.CoordinateResponse_PeerUpdate
	err     error // the first error apply returned; every later add returns it

	applyMu sync.Mutex // one batch at a time, so batches apply in order
}

func newPeerBatcher(apply func([]*proto.CoordinateResponse_PeerUpdate) error) *peerBatcher {
	return &peerBatcher{apply: apply, wake: make(chan struct{}, 1)}
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
	b.pending = append(b.pending, updates...)
	select {
	case b.wake <- struct{}{}:
	default: // run is already due to flush
	}
	return nil
}

// flush applies everything queued so far. When it returns, every update
// added before the call has reached the engine.
func (b *peerBatcher) flush() {
	b.applyMu.Lock()
	defer b.applyMu.Unlock()
	b.mu.Lock()
	batch := b.pending
	b.pending = nil
	b.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := b.apply(batch); err != nil {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
}

// run flushes whenever updates arrive, until ctx ends.
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
