package coderd

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"cdr.dev/slog/v3"
)

// healthSink records entries for assertions.
type healthSink struct {
	mu      sync.Mutex
	entries []slog.SinkEntry
}

func (c *healthSink) LogEntry(_ context.Context, e slog.SinkEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = append(c.entries, e)
}

func (*healthSink) Sync() {}

func (c *healthSink) lines(min slog.Level) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.entries {
		if e.Level >= min {
			out = append(out, e.Level.String()+" "+e.Message)
		}
	}
	return out
}

// TestControlHealth drives the dial outcomes of a session: the first
// connection, a drop with an immediate reconnect, then an outage of many
// failed redials and the return. Each change of condition is one line; the
// retries in between are debug only.
func TestControlHealth(t *testing.T) {
	sink := &healthSink{}
	h := newControlHealth(slog.Make(sink).Leveled(slog.LevelDebug))
	now := time.Unix(0, 0)
	h.now = func() time.Time { return now }
	ctx := context.Background()
	refused := errors.New("cannot reach http://coder: connection refused")

	// Start: failures before the first success are the Start's to report.
	h.dialing(ctx)
	h.dialed(ctx, refused)
	h.dialing(ctx)
	h.dialed(ctx, nil)
	if got := sink.lines(slog.LevelDebug); len(got) != 0 {
		t.Fatalf("logged before the first connection was lost: %q", got)
	}

	// A drop with an immediate reconnect.
	h.dialing(ctx)
	now = now.Add(30 * time.Millisecond)
	h.dialed(ctx, nil)

	// An outage: ten failed redials, then the deployment is back.
	h.dialing(ctx)
	for range 10 {
		now = now.Add(time.Second)
		h.dialed(ctx, refused)
		h.dialing(ctx)
	}
	h.dialed(ctx, nil)

	want := []string{
		"INFO the control connection to the deployment ended; reconnecting",
		"INFO reconnected to the deployment",
		"INFO the control connection to the deployment ended; reconnecting",
		"WARN cannot reach the deployment; connections to workspaces that are already up keep working where they can, and the tunnel keeps retrying",
		"INFO reconnected to the deployment",
	}
	if got := sink.lines(slog.LevelInfo); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("logged\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := len(sink.lines(slog.LevelDebug)) - len(want); n != 9 {
		t.Errorf("%d debug lines for the retries after the first, want 9", n)
	}
}

// TestDemoteRetrySink checks the controller's per-retry complaints are
// lowered to debug and everything else passes unchanged.
func TestDemoteRetrySink(t *testing.T) {
	sink := &healthSink{}
	logger := slog.Make(demoteRetrySink{next: sink}).Leveled(slog.LevelDebug)
	ctx := context.Background()
	logger.Error(ctx, "failed to dial tailnet v2+ API")
	logger.Warn(ctx, "control plane connection closed, retrying")
	logger.Error(ctx, "something else broke")
	got := sink.lines(slog.LevelDebug)
	want := []string{
		"DEBUG failed to dial tailnet v2+ API",
		"DEBUG control plane connection closed, retrying",
		"ERROR something else broke",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %q, want %q", got, want)
	}
}
