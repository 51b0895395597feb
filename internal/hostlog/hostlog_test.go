package hostlog

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"cdr.dev/slog/v3"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFormat(t *testing.T) {
	cases := []struct {
		name string
		e    slog.SinkEntry
		want string
	}{
		{"message only", slog.SinkEntry{Message: "hello"}, "hello"},
		{"names and fields", slog.SinkEntry{
			LoggerNames: []string{"vpn", "engine"}, Message: "peer added",
			Fields: slog.M(slog.F("agent", "main"), slog.F("n", 3)),
		}, "vpn.engine: peer added agent=main n=3"},
		{"quoted values", slog.SinkEntry{Message: "m", Fields: slog.M(
			slog.F("error", errors.New("dial tcp: refused")), slog.F("empty", ""), slog.F("eq", "a=b"),
		)}, `m error="dial tcp: refused" empty="" eq="a=b"`},
		{"NUL bytes", slog.SinkEntry{Message: "a\x00b"}, `a\x00b`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Format(tc.e); got != tc.want {
				t.Fatalf("Format = %q, want %q", got, tc.want)
			}
		})
	}
	long := Format(slog.SinkEntry{Message: strings.Repeat("é", MaxMessage)})
	if !strings.HasSuffix(long, fmt.Sprintf("… [%d bytes cut]", 2*MaxMessage-MaxMessage)) || !strings.HasPrefix(long, "éé") {
		t.Fatalf("a long message was cut to %q…%q", long[:8], long[len(long)-24:])
	}
}

// collector is a callback that records what it gets; gate, when not nil,
// holds each call until the test sends on it.
type collector struct {
	mu      sync.Mutex
	records []record
	calls   chan struct{}
	gate    chan struct{}
}

func newCollector(gated bool) *collector {
	c := &collector{calls: make(chan struct{}, 1<<16)}
	if gated {
		c.gate = make(chan struct{})
	}
	return c
}

func (c *collector) fn(level int32, message string) {
	c.calls <- struct{}{}
	if c.gate != nil {
		<-c.gate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = append(c.records, record{level, message})
}

func (c *collector) got() []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]record(nil), c.records...)
}

// waitFor waits until the callback has recorded n records.
func (c *collector) waitFor(t *testing.T, n int) []record {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := c.got(); len(got) >= n {
			return got
		}
		select {
		case <-c.calls:
		case <-deadline:
			t.Fatalf("the callback got %d records, want %d: %v", len(c.got()), n, c.got())
		}
	}
}

func TestLevelsAndOrder(t *testing.T) {
	var d Dispatcher
	log := d.Logger()
	ctx := context.Background()
	log.Info(ctx, "before any callback") // dropped at once: nobody listens
	c := newCollector(false)
	d.Set(c.fn, LevelInfo, true)
	defer d.Set(nil, 0, true)
	log.Debug(ctx, "below the level")
	log.Info(ctx, "one")
	log.Warn(ctx, "two", slog.F("k", "v"))
	log.Error(ctx, "three")
	got := c.waitFor(t, 3)
	want := []record{{LevelInfo, "one"}, {LevelWarn, "two k=v"}, {LevelError, "three"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the callback got %v, want %v", got, want)
	}
}

// A callback that does not return fills the queue: logging goes on without
// waiting, the excess is dropped and counted, and once the callback runs
// again a warning says exactly how many were lost.
func TestSlowCallbackDropsAndCounts(t *testing.T) {
	var d Dispatcher
	c := newCollector(true)
	d.Set(c.fn, LevelDebug, true)
	log := d.Logger()
	ctx := context.Background()
	log.Info(ctx, "first")
	<-c.calls // the callback holds "first"
	const n = 3 * QueueRecords
	start := time.Now()
	for i := range n {
		log.Info(ctx, "record", slog.F("i", i))
	}
	t.Logf("%d records logged in %s with the callback stuck", n, time.Since(start).Round(time.Millisecond))
	close(c.gate)
	got := c.waitFor(t, 2+QueueRecords)
	note := regexp.MustCompile(`^codervpn: (\d+) log records were dropped because the log callback did not keep up \((\d+) in all\)$`)
	var delivered, dropped int
	for _, r := range got[1:] {
		if m := note.FindStringSubmatch(r.message); m != nil {
			if r.level != LevelWarn {
				t.Errorf("the drop note has level %d", r.level)
			}
			k, _ := strconv.Atoi(m[1])
			dropped += k
			continue
		}
		if r.message != fmt.Sprintf("record i=%d", delivered) {
			t.Fatalf("record %d is %q: records must arrive in order, the first ones kept", delivered, r.message)
		}
		delivered++
	}
	if delivered != QueueRecords || delivered+dropped != n {
		t.Fatalf("%d records delivered and %d reported dropped, want %d and %d", delivered, dropped, QueueRecords, n-QueueRecords)
	}
	d.Set(nil, 0, true)
}

// Set(nil) with wait returns only once the callback has returned, and it is
// never called again.
func TestSetWaitsForTheCallback(t *testing.T) {
	var d Dispatcher
	c := newCollector(true)
	d.Set(c.fn, LevelDebug, true)
	d.Logger().Info(context.Background(), "held")
	<-c.calls
	off := make(chan struct{})
	go func() {
		d.Set(nil, 0, true)
		close(off)
	}()
	select {
	case <-off:
		t.Fatal("Set(nil) returned while the callback was still running")
	case <-time.After(50 * time.Millisecond): // a return would be immediate
	}
	close(c.gate)
	<-off
	d.Logger().Info(context.Background(), "after off")
	if got := c.got(); len(got) != 1 || got[0].message != "held" {
		t.Fatalf("the callback got %v after it was turned off", got)
	}
}

func TestValidLevel(t *testing.T) {
	for l := int32(-2); l <= LevelFatal+2; l++ {
		if got, want := ValidLevel(l), l >= 0 && l <= 5; got != want {
			t.Errorf("ValidLevel(%d) = %v", l, got)
		}
	}
}
