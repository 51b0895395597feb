// Package hostlog hands the library's local logs to a host's callback: the
// C ABI's coderSetLogger. A NetworkExtension has no terminal and no stderr;
// the records a CLI prints (why a session ended, a failed handshake, a
// write that timed out) reach it only through a function it gives us.
//
// The engine logs from its packet paths and must never wait for a host:
// records wait in a bounded queue that one goroutine drains into the
// callback, one record at a time. When the queue is full a record is
// dropped and counted, and the next record delivered is followed by a
// warning that says how many were lost.
package hostlog

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"cdr.dev/slog/v3"

	"github.com/codervpn/codervpn/vpnlib"
)

// Levels of a record: the protocol's Log.Level numbers (proto/vpn.proto),
// which the C header defines as CODERVPN_LOG_*.
const (
	LevelDebug int32 = iota
	LevelInfo
	LevelWarn
	LevelError
	LevelCritical
	LevelFatal
)

// Bounds of the queue between the loggers and the callback: records, and
// bytes of their messages, so a burst of large debug lines cannot grow it
// past what an extension limited to 50 MiB can spare.
const (
	QueueRecords = 1024
	QueueBytes   = 512 << 10
)

// MaxMessage bounds one record's text. A log viewer (os_log, Console) has
// no use for more, and the engine logs whole network maps at debug level.
const MaxMessage = 16 << 10

// Func receives one record. message is valid only during the call.
type Func func(level int32, message string)

// Dispatcher is the slog sink behind a host's callback. The zero value
// has no callback and drops every record at once. Its methods are safe for
// concurrent use.
type Dispatcher struct {
	setMu sync.Mutex // serialises Set
	cur   atomic.Pointer[target]
}

// Logger is a logger that logs everything to d: the level filter is the
// callback's, so the host can change it while tunnels run.
func (d *Dispatcher) Logger() slog.Logger {
	return slog.Make(d).Leveled(slog.LevelDebug)
}

// ValidLevel reports whether level is one a host may ask for.
func ValidLevel(level int32) bool { return level >= LevelDebug && level <= LevelFatal }

// Set replaces the callback: records at minLevel and above go to fn from
// now on; a nil fn turns delivery off. Records still queued for the old
// callback are discarded. When wait is true, Set returns only once the old
// callback is no longer running and will never be called again, so the
// host may free what it handed with it; a call made from inside the
// callback itself must pass false (it cannot wait for its own return).
func (d *Dispatcher) Set(fn Func, minLevel int32, wait bool) {
	d.setMu.Lock()
	defer d.setMu.Unlock()
	var next *target
	if fn != nil {
		next = newTarget(fn, minLevel)
	}
	old := d.cur.Swap(next)
	if old != nil {
		close(old.stop)
		if wait {
			<-old.done
		}
	}
	if next != nil {
		go next.run()
	}
}

// LogEntry implements slog.Sink. It never blocks.
func (d *Dispatcher) LogEntry(_ context.Context, e slog.SinkEntry) {
	t := d.cur.Load()
	if t == nil {
		return
	}
	level := int32(vpnlib.LogLevel(e.Level))
	if level < t.minLevel {
		return
	}
	t.enqueue(record{level: level, message: Format(e)})
}

// Sync implements slog.Sink; delivery is asynchronous by design.
func (*Dispatcher) Sync() {}

type record struct {
	level   int32
	message string
}

// target is one callback and its queue, drained by run.
type target struct {
	fn       Func
	minLevel int32
	stop     chan struct{} // closed by Set when the callback is replaced
	done     chan struct{} // closed when run has returned
	notify   chan struct{} // one pending wake-up for run

	mu      sync.Mutex
	queue   []record
	bytes   int
	dropped uint64
}

func newTarget(fn Func, minLevel int32) *target {
	return &target{
		fn: fn, minLevel: minLevel,
		stop: make(chan struct{}), done: make(chan struct{}), notify: make(chan struct{}, 1),
	}
}

func (t *target) enqueue(r record) {
	t.mu.Lock()
	if len(t.queue) >= QueueRecords || t.bytes+len(r.message) > QueueBytes {
		t.dropped++
		t.mu.Unlock()
		return
	}
	t.queue = append(t.queue, r)
	t.bytes += len(r.message)
	t.mu.Unlock()
	select {
	case t.notify <- struct{}{}:
	default: // run is already due to drain
	}
}

// next takes the oldest record, and the drops counted so far.
func (t *target) next() (r record, ok bool, dropped uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.queue) == 0 {
		return record{}, false, t.dropped
	}
	r = t.queue[0]
	t.queue[0] = record{}
	t.queue = t.queue[1:]
	t.bytes -= len(r.message)
	if len(t.queue) == 0 {
		t.queue = nil // let the backing array go after a burst
	}
	return r, true, t.dropped
}

// run calls fn for each record until Set replaces the callback.
func (t *target) run() {
	defer close(t.done)
	var reported uint64
	for {
		select {
		case <-t.stop:
			return
		case <-t.notify:
		}
		for {
			select {
			case <-t.stop:
				return
			default:
			}
			r, ok, dropped := t.next()
			if !ok {
				break
			}
			t.fn(r.level, r.message)
			if dropped > reported {
				t.fn(LevelWarn, fmt.Sprintf("codervpn: %d log records were dropped because the log callback did not keep up (%d in all)",
					dropped-reported, dropped))
				reported = dropped
			}
		}
	}
}

// Format renders a record as one line: the logger's names, the message,
// then each field as name=value (quoted when it holds a space, a quote or
// an equals sign), at most MaxMessage bytes and without NUL bytes, which
// would end a C string early.
func Format(e slog.SinkEntry) string {
	var b strings.Builder
	if len(e.LoggerNames) > 0 {
		b.WriteString(strings.Join(e.LoggerNames, "."))
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	for _, f := range e.Fields {
		b.WriteByte(' ')
		b.WriteString(f.Name)
		b.WriteByte('=')
		v := fmt.Sprint(f.Value)
		if v == "" || strings.ContainsAny(v, " \t\n\"=") {
			v = strconv.Quote(v)
		}
		b.WriteString(v)
	}
	return vpnlib.CutText(strings.ReplaceAll(b.String(), "\x00", `\x00`), MaxMessage)
}
