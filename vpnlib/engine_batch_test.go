package vpnlib

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/coder/v2/tailnet/proto"
)

func numberedUpdates(from, to int) []*proto.CoordinateResponse_PeerUpdate {
	var out []*proto.CoordinateResponse_PeerUpdate
	for i := from; i < to; i++ {
		out = append(out, &proto.CoordinateResponse_PeerUpdate{Reason: strconv.Itoa(i)})
	}
	return out
}

// recordingEngine stands in for the engine's UpdatePeers: it records each
// batch and can be held inside a call.
type recordingEngine struct {
	mu      sync.Mutex
	batches [][]string
	entered chan struct{} // receives once per call, if set
	gate    chan struct{} // a call waits for it, if set
	err     error
}

func (e *recordingEngine) apply(u []*proto.CoordinateResponse_PeerUpdate) error {
	if e.entered != nil {
		e.entered <- struct{}{}
	}
	if e.gate != nil {
		<-e.gate
	}
	var names []string
	for _, x := range u {
		names = append(names, x.GetReason())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.batches = append(e.batches, names)
	return e.err
}

// allLost records a lost marker as a batch of its own, and announces it on
// entered like a call.
func (e *recordingEngine) allLost() {
	e.mu.Lock()
	e.batches = append(e.batches, []string{"lost"})
	e.mu.Unlock()
	if e.entered != nil {
		e.entered <- struct{}{}
	}
}

func (e *recordingEngine) all() (calls int, order []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.batches {
		order = append(order, b...)
	}
	return len(e.batches), order
}

// gatedBatcher returns a running batcher whose engine announces each call
// on entered and holds it until gate is closed.
func gatedBatcher(t *testing.T) (*recordingEngine, *peerBatcher) {
	eng := &recordingEngine{entered: make(chan struct{}, 8), gate: make(chan struct{})}
	b := newPeerBatcher(eng.apply, eng.allLost)
	runBatcher(t, b)
	return eng, b
}

func runBatcher(t *testing.T, b *peerBatcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("run did not return after its context ended")
		}
	})
}

// While the engine is busy with one batch, later updates are accepted at
// once (the controller keeps reading the coordinator) and reach the engine
// together, in the order they came.
func TestPeerBatcherCoalescesInOrder(t *testing.T) {
	t.Parallel()
	eng, b := gatedBatcher(t)
	if err := b.add(numberedUpdates(0, 1)); err != nil {
		t.Fatal(err)
	}
	<-eng.entered // the engine holds the first batch
	for i := 1; i < 200; i++ {
		if err := b.add(numberedUpdates(i, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	close(eng.gate)
	b.flush()
	calls, order := eng.all()
	if len(order) != 200 {
		t.Fatalf("engine got %d updates, want 200", len(order))
	}
	for i, name := range order {
		if name != strconv.Itoa(i) {
			t.Fatalf("update %d reached the engine as %s: order lost", i, name)
		}
	}
	if calls != 2 {
		t.Errorf("engine called %d times for 200 updates, 199 of them queued behind a busy engine; want 2", calls)
	}
}

// flush returns only once everything added before it reached the engine,
// even when a batch is in flight on the run goroutine: SetAllPeersLost
// relies on it to come after the updates that preceded it.
func TestPeerBatcherFlushIsABarrier(t *testing.T) {
	t.Parallel()
	eng, b := gatedBatcher(t)
	_ = b.add(numberedUpdates(0, 3))
	<-eng.entered
	_ = b.add(numberedUpdates(3, 5))
	flushed := make(chan struct{})
	go func() { b.flush(); close(flushed) }()
	select {
	case <-flushed:
		t.Fatal("flush returned while the engine still held the first batch")
	case <-time.After(50 * time.Millisecond): // enough for a wrong flush to return
	}
	close(eng.gate)
	<-flushed
	if _, order := eng.all(); len(order) != 5 {
		t.Fatalf("after flush the engine has %v, want all 5", order)
	}
}

// An engine error ends coordination as a direct call's error would: the
// next add returns it, and nothing more is queued.
func TestPeerBatcherReportsEngineError(t *testing.T) {
	t.Parallel()
	errClosed := errors.New("engine closed")
	eng := &recordingEngine{err: errClosed}
	b := newPeerBatcher(eng.apply, eng.allLost)
	if err := b.add(numberedUpdates(0, 1)); err != nil {
		t.Fatal(err)
	}
	b.flush()
	if err := b.add(numberedUpdates(1, 2)); !errors.Is(err, errClosed) {
		t.Fatalf("add after a failed batch = %v, want %v", err, errClosed)
	}
	b.flush()
	if calls, _ := eng.all(); calls != 1 {
		t.Errorf("engine called %d times, want 1: nothing may be applied after its error", calls)
	}
	if err := b.add(nil); !errors.Is(err, errClosed) {
		t.Errorf("empty add after the error = %v", err)
	}
}

// Every peer is marked lost after the updates queued before the report and
// before those queued after it, even when the report has to wait for a
// batch in flight while the next connection's updates queue: marked lost
// after them, peers the new connection had just sent were removed.
func TestPeerBatcherLostKeepsItsPlace(t *testing.T) {
	t.Parallel()
	eng, b := gatedBatcher(t)
	_ = b.add(numberedUpdates(0, 2))
	<-eng.entered // the engine holds the first batch
	_ = b.add(numberedUpdates(2, 3))
	b.queueLost() // what allLost does before it waits for the engine
	_ = b.add(numberedUpdates(3, 5))
	close(eng.gate)
	b.coordinationLost()
	_, order := eng.all()
	want := []string{"0", "1", "2", "lost", "3", "4", "lost"}
	if !slices.Equal(order, want) {
		t.Fatalf("the engine saw %v, want %v", order, want)
	}
}

// A coordination that starts before the previous one reported its loss
// (the controller reports it from the old connection's goroutine) has the
// loss marked before its first update, and the late report changes
// nothing.
func TestPeerBatcherLateLossReport(t *testing.T) {
	t.Parallel()
	eng := &recordingEngine{}
	b := newPeerBatcher(eng.apply, eng.allLost)
	b.coordinationStarted()
	_ = b.add(numberedUpdates(0, 2))
	b.coordinationStarted() // the next connection, before the report
	_ = b.add(numberedUpdates(2, 4))
	b.coordinationLost() // the first connection's late report
	b.flush()
	b.coordinationLost() // the second connection's, in its place
	_ = b.add(numberedUpdates(4, 5))
	b.flush()
	_, order := eng.all()
	want := []string{"0", "1", "lost", "2", "3", "lost", "4"}
	if !slices.Equal(order, want) {
		t.Fatalf("the engine saw %v, want %v", order, want)
	}
}

// A loss queued by a coordination that started early reaches the engine
// even if that coordination sends nothing: its late report is ignored, so
// nothing else would apply it.
func TestPeerBatcherEarlyLossWithoutUpdates(t *testing.T) {
	t.Parallel()
	eng, b := gatedBatcher(t)
	close(eng.gate)
	b.coordinationStarted()
	b.coordinationStarted() // the next connection, before the first's report
	b.coordinationLost()    // the late report, ignored
	select {
	case <-eng.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the queued loss never reached the engine")
	}
	if _, order := eng.all(); !slices.Equal(order, []string{"lost"}) {
		t.Fatalf("the engine saw %v, want every peer marked lost", order)
	}
}
