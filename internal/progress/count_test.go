package progress

import (
	"context"
	"testing"
	"time"
)

func TestCountAwait(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c Count
	if !c.Await(ctx, 0, nil) {
		t.Fatal("Await(0) on a new count did not return at once")
	}
	reached := make(chan bool, 1)
	go func() { reached <- c.Await(ctx, 3, nil) }()
	c.Add(1)
	c.Raise(1) // not beyond: no change
	c.Raise(2)
	select {
	case <-reached:
		t.Fatalf("Await(3) returned at %d", c.Load())
	default:
	}
	c.Add(1)
	if !<-reached || c.Load() != 3 {
		t.Fatalf("Await(3) did not see the count reach 3 (at %d)", c.Load())
	}

	stop := make(chan struct{})
	close(stop)
	if !c.Await(ctx, 10, stop) {
		t.Error("Await with the counting over = false, want true")
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if c.Await(short, 10, nil) {
		t.Error("Await past its context = true, want false")
	}
}
