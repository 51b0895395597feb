package vpnlib

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"cdr.dev/slog/v3"
	"tailscale.com/types/netmap"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// DefaultLogQueue is how many Log messages may wait for the manager before
// new ones are dropped (and counted).
const DefaultLogQueue = 1024

// redactedMark replaces every secret in forwarded logs.
const redactedMark = "[REDACTED]"

// minSecretLen is the shortest header value we redact. Shorter values ("1",
// "on") cannot be secrets worth the name, and redacting them would shred
// every log line that happens to contain those letters.
const minSecretLen = 4

// redactor removes secrets (the API token, header values) from log text. The
// set changes when a StartRequest arrives; sinks read it atomically.
type redactor struct {
	r atomic.Pointer[secretSet]
}

// secretSet is one StartRequest's secrets and the replacer that removes
// them. The list lets redact skip the replacer for text that holds none of
// them (nearly all of it): strings.Replacer copies every string it is
// given, even one it leaves unchanged, and at a thousand workspaces the
// engine logs megabytes of peer state a second.
type secretSet struct {
	secrets  []string
	replacer *strings.Replacer
}

// setSecrets replaces the secret set. Longer secrets are replaced first so a
// secret containing another is removed whole.
func (r *redactor) setSecrets(secrets []string) {
	var s []string
	for _, v := range secrets {
		if len(v) >= minSecretLen && !slices.Contains(s, v) {
			s = append(s, v)
		}
	}
	if len(s) == 0 {
		r.r.Store(nil)
		return
	}
	slices.SortFunc(s, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(s))
	for _, v := range s {
		pairs = append(pairs, v, redactedMark)
	}
	r.r.Store(&secretSet{secrets: s, replacer: strings.NewReplacer(pairs...)})
}

func (r *redactor) redact(s string) string {
	set := r.r.Load()
	if set == nil {
		return s
	}
	for _, secret := range set.secrets {
		if strings.Contains(s, secret) {
			return set.replacer.Replace(s)
		}
	}
	return s
}

// minTokenPartLen is the shortest secret part of an "<id>-<secret>" token
// that is redacted on its own (Coder's secrets are 22 characters); shorter
// parts are words, not secrets.
const minTokenPartLen = 12

// tokenSecrets returns the strings to redact for a session token: the token
// and, for Coder's "<id>-<secret>" form, the secret on its own.
func tokenSecrets(token string) []string {
	out := []string{token}
	if _, secret, ok := strings.Cut(token, "-"); ok && len(secret) >= minTokenPartLen {
		out = append(out, secret)
	}
	return out
}

// entryToLog converts a slog entry to a Log message, redacting every string.
func entryToLog(e slog.SinkEntry, r *redactor) *vpnpb.Log {
	l := &vpnpb.Log{
		Level:   LogLevel(e.Level),
		Message: r.redact(e.Message),
	}
	for _, n := range e.LoggerNames {
		l.LoggerNames = append(l.LoggerNames, r.redact(n))
	}
	for _, f := range e.Fields {
		l.Fields = append(l.Fields, &vpnpb.Log_Field{Name: r.redact(f.Name), Value: capField(r.redact(formatLogValue(f.Value)))})
	}
	return l
}

// LogLevel is the protocol's level for a slog level: what a Log message
// carries, and the number the C ABI's log callback gets.
func LogLevel(l slog.Level) vpnpb.Log_Level {
	switch {
	case l <= slog.LevelDebug:
		return vpnpb.Log_DEBUG
	case l == slog.LevelInfo:
		return vpnpb.Log_INFO
	case l == slog.LevelWarn:
		return vpnpb.Log_WARN
	case l == slog.LevelError:
		return vpnpb.Log_ERROR
	case l == slog.LevelCritical:
		return vpnpb.Log_CRITICAL
	default:
		return vpnpb.Log_FATAL
	}
}

// formatLogValue renders a field value as text. It never panics: fmt
// recovers from panicking String methods and JSON errors fall back to fmt.
func formatLogValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "<nil>"
	case string:
		return v
	case error:
		return fmt.Sprint(v)
	case *netmap.NetworkMap:
		return summarizeNetmap(v, maxLogFieldLen)
	case fmt.Stringer:
		return fmt.Sprint(v)
	case []byte:
		return fmt.Sprintf("%q", v)
	}
	switch reflect.TypeOf(v).Kind() {
	case reflect.Struct, reflect.Map, reflect.Slice, reflect.Array, reflect.Pointer:
		if b, err := json.Marshal(v); err == nil {
			return string(b)
		}
	}
	return fmt.Sprintf("%+v", v)
}

// logForwarder is the slog sink that turns log entries into Log messages for
// the manager. LogEntry never blocks: entries wait in a bounded queue and
// are dropped (and counted) when the manager does not keep up, because the
// engine logs from its packet paths and must never stall on our pipe.
//
// Draining happens under drainMu, taking each message from the queue while
// holding it, so flush is a barrier: when it returns, everything queued
// before the call has been sent. The tunnel flushes before each reply, so a
// manager sees the logs of a Start (or a Wake) before its answer.
type logForwarder struct {
	redactor *redactor
	queue    chan *vpnpb.Log
	notify   chan struct{} // one pending wake-up for run
	dropped  atomic.Uint64
	drainMu  sync.Mutex
	reported uint64 // drops already reported; guarded by drainMu
}

func newLogForwarder(r *redactor, size int) *logForwarder {
	if size <= 0 {
		size = DefaultLogQueue
	}
	return &logForwarder{redactor: r, queue: make(chan *vpnpb.Log, size), notify: make(chan struct{}, 1)}
}

// LogEntry implements slog.Sink.
func (f *logForwarder) LogEntry(_ context.Context, e slog.SinkEntry) {
	f.enqueue(entryToLog(e, f.redactor))
}

// enqueue queues l for the manager, or drops and counts it if the queue is
// full.
func (f *logForwarder) enqueue(l *vpnpb.Log) {
	select {
	case f.queue <- l:
		select {
		case f.notify <- struct{}{}:
		default: // run is already due to drain
		}
	default:
		f.dropped.Add(1)
	}
}

// Sync implements slog.Sink; delivery is asynchronous by design.
func (*logForwarder) Sync() {}

// run sends queued logs with send until stop closes.
func (f *logForwarder) run(stop <-chan struct{}, send func(*vpnpb.Log) error) {
	for {
		select {
		case <-stop:
			return
		case <-f.notify:
			f.flush(send)
		}
	}
}

// flush sends whatever is queued now, and whatever another drain has taken
// but not yet sent, without waiting for more. It sends at most what was
// queued when it got its turn: under a log storm the engine refills the
// queue as fast as we send, and a flush that ran until the queue was empty
// never returned, so the reply or StopResponse waiting behind it was
// never sent (TestStopRaces, "log storm").
func (f *logForwarder) flush(send func(*vpnpb.Log) error) {
	f.drainMu.Lock()
	defer f.drainMu.Unlock()
	for n := len(f.queue); n > 0; n-- {
		select {
		case l := <-f.queue:
			f.deliver(l, send)
		default:
			return
		}
	}
}

// deliver sends l, then a note of any drops since the last one. It is
// called with drainMu held.
func (f *logForwarder) deliver(l *vpnpb.Log, send func(*vpnpb.Log) error) {
	if err := send(l); err != nil {
		return
	}
	if d := f.dropped.Load(); d > f.reported {
		n := d - f.reported
		f.reported = d
		_ = send(&vpnpb.Log{
			Level:       vpnpb.Log_WARN,
			Message:     fmt.Sprintf("%d log messages were dropped because the manager did not read them fast enough", n),
			LoggerNames: []string{"vpn", "logs"},
			Fields:      []*vpnpb.Log_Field{{Name: "dropped", Value: fmt.Sprint(n)}, {Name: "dropped_total", Value: fmt.Sprint(d)}},
		})
	}
}

// localSink passes entries to the embedder's own logger (the CLI's stderr)
// after the same redaction the manager's copy gets. It is for logs that must
// not travel to the manager (the speaker's own); everything else goes
// through tunnelSink, which formats once for both.
type localSink struct {
	logger   slog.Logger
	redactor *redactor
}

func (s localSink) LogEntry(ctx context.Context, e slog.SinkEntry) {
	e.Message = s.redactor.redact(e.Message)
	fields := make(slog.Map, 0, len(e.Fields))
	for _, f := range e.Fields {
		fields = append(fields, slog.F(s.redactor.redact(f.Name), capField(s.redactor.redact(formatLogValue(f.Value)))))
	}
	e.Fields = fields
	s.logger.Log(ctx, e)
}

func (s localSink) Sync() { s.logger.Sync() }

// tunnelSink is the tunnel's one log sink: it formats and redacts each entry
// once, queues it for the manager, and hands the same text to the local
// logger when there is one. (Formatting is the expensive part: the engine
// logs large values at debug level, and doing it once per copy doubled it.)
type tunnelSink struct {
	forwarder *logForwarder
	// local is the embedder's logger; nil when it has none.
	local *slog.Logger
}

func newTunnelSink(f *logForwarder, local slog.Logger) *tunnelSink {
	s := &tunnelSink{forwarder: f}
	if !reflect.ValueOf(local).IsZero() {
		s.local = &local
	}
	return s
}

func (s *tunnelSink) LogEntry(ctx context.Context, e slog.SinkEntry) {
	l := entryToLog(e, s.forwarder.redactor)
	s.forwarder.enqueue(l)
	if s.local == nil {
		return
	}
	e.Message = l.Message
	e.LoggerNames = l.LoggerNames
	fields := make(slog.Map, 0, len(l.Fields))
	for _, f := range l.Fields {
		fields = append(fields, slog.F(f.Name, f.Value))
	}
	e.Fields = fields
	s.local.Log(ctx, e)
}

func (s *tunnelSink) Sync() {
	if s.local != nil {
		s.local.Sync()
	}
}

// maxLogFieldLen bounds one field's value in a log line. The engine logs
// whole network maps at debug level, hundreds of kilobytes per line at a
// thousand peers; the manager's log has no use for that much, and the pipe
// to it also carries PeerUpdates.
const maxLogFieldLen = 16 << 10

// capField shortens an over-long (already redacted) value, saying how much
// was cut. Redaction comes first so that a cut can never leave part of a
// secret behind.
func capField(v string) string { return CutText(v, maxLogFieldLen) }

// CutText shortens s to at most max bytes (on a rune boundary) followed by
// a note of how many bytes were cut, or returns it as it is.
func CutText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return fmt.Sprintf("%s… [%d bytes cut]", s[:i], len(s)-i)
}
