package vpnlib

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"cdr.dev/slog/v3"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// countingStringer counts how often it is formatted.
type countingStringer struct {
	n    *atomic.Int32
	text string
}

func (c countingStringer) String() string {
	c.n.Add(1)
	return c.text
}

// recordingSink keeps what reaches the local logger.
type recordingSink struct {
	mu      sync.Mutex
	entries []slog.SinkEntry
}

func (r *recordingSink) LogEntry(_ context.Context, e slog.SinkEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = append(r.entries, e)
}

func (*recordingSink) Sync() {}

// One entry is formatted once for both copies, both carry the same redacted
// text, and an over-long value is cut after redaction.
func TestTunnelSinkFormatsOnce(t *testing.T) {
	const secret = "s3cr3t-token-value-abcdef"
	r := &redactor{}
	r.setSecrets([]string{secret})
	fwd := newLogForwarder(r, 4)
	local := &recordingSink{}
	sink := newTunnelSink(fwd, slog.Make(local).Leveled(slog.LevelDebug))
	logger := slog.Make(sink).Leveled(slog.LevelDebug)

	var formatted atomic.Int32
	// The secret straddles the cut: it must be gone, not half there.
	long := strings.Repeat("x", maxLogFieldLen-5) + secret + strings.Repeat("y", 1000)
	logger.Debug(context.Background(), "network map", slog.F("map", countingStringer{&formatted, long}))

	if n := formatted.Load(); n != 1 {
		t.Fatalf("the field was formatted %d times, want once", n)
	}
	l := <-fwd.queue
	got := l.GetFields()[0].GetValue()
	if strings.Contains(got, secret[:5]) || !strings.Contains(got, "bytes cut]") || len(got) > maxLogFieldLen+64 {
		t.Fatalf("manager's copy: %d bytes ending %q", len(got), got[max(0, len(got)-80):])
	}
	local.mu.Lock()
	defer local.mu.Unlock()
	if len(local.entries) != 1 {
		t.Fatalf("local logger got %d entries", len(local.entries))
	}
	if lv := local.entries[0].Fields[0].Value; lv != got {
		t.Fatal("the local copy differs from the manager's")
	}
}

// Without a local logger nothing is built for one.
func TestTunnelSinkNoLocal(t *testing.T) {
	sink := newTunnelSink(newLogForwarder(&redactor{}, 4), slog.Logger{})
	if sink.local != nil {
		t.Fatal("a zero Logger counted as a local logger")
	}
	slog.Make(sink).Info(context.Background(), "hello")
	if l := <-sink.forwarder.queue; l.GetMessage() != "hello" {
		t.Fatalf("forwarded %v", l)
	}
}

func TestCapField(t *testing.T) {
	short := strings.Repeat("a", maxLogFieldLen)
	if capField(short) != short {
		t.Fatal("a value at the limit was cut")
	}
	// A multi-byte rune across the limit is not split.
	v := strings.Repeat("a", maxLogFieldLen-1) + "é" + "tail"
	got := capField(v)
	if !strings.HasPrefix(got, strings.Repeat("a", maxLogFieldLen-1)+"…") || !strings.HasSuffix(got, "[6 bytes cut]") {
		t.Fatalf("capField = ...%q", got[maxLogFieldLen-5:])
	}
}

// flush is a barrier: when it returns, every message queued before it was
// sent, including one the background drain had already taken and was still
// sending. The tunnel relies on it to put a request's logs before its reply.
func TestLogFlushIsABarrier(t *testing.T) {
	f := newLogForwarder(&redactor{}, 16)
	var mu sync.Mutex
	var sent []string
	gate := make(chan struct{})
	taken := make(chan struct{})
	send := func(l *vpnpb.Log) error {
		if l.GetMessage() == "first" {
			close(taken)
			<-gate
		}
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, l.GetMessage())
		return nil
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		f.run(stop, send)
		close(done)
	}()
	defer func() {
		close(stop)
		<-done
	}()
	f.enqueue(&vpnpb.Log{Message: "first"})
	<-taken // the background drain is in the middle of sending "first"
	f.enqueue(&vpnpb.Log{Message: "second"})
	atReturn := make(chan []string)
	go func() {
		f.flush(send)
		mu.Lock()
		defer mu.Unlock()
		atReturn <- slices.Clone(sent)
	}()
	close(gate)
	if got := <-atReturn; !slices.Equal(got, []string{"first", "second"}) {
		t.Fatalf("sent when flush returned: %q", got)
	}
}
