package vpnlib

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cdr.dev/slog/v3"

	vpnpb "github.com/codervpn/codervpn/proto"
)

func TestEntryToLogRedacts(t *testing.T) {
	t.Parallel()
	const token = "AbCdEf1234-SuperSecretPart99"
	r := &redactor{}
	r.setSecrets(append(tokenSecrets(token), "header-secret-value", "on"))
	entry := slog.SinkEntry{
		Level:       slog.LevelWarn,
		Message:     "dialing with token " + token + " and secret SuperSecretPart99",
		LoggerNames: []string{"vpn", "net"},
		Fields: slog.Map{
			slog.F("header", "X-Foo: header-secret-value"),
			slog.Error(errors.New("401 for " + token)),
			slog.F("struct", struct{ Token string }{Token: token}),
			slog.F("count", 3),
			slog.F("mode", "on"),
		},
	}
	l := entryToLog(entry, r)
	all := fmt.Sprint(l.Message, l.LoggerNames, l.Fields)
	for _, secret := range []string{token, "SuperSecretPart99", "header-secret-value"} {
		if strings.Contains(all, secret) {
			t.Fatalf("secret %q in log: %s", secret, all)
		}
	}
	if l.Level != vpnpb.Log_WARN || strings.Join(l.LoggerNames, ".") != "vpn.net" {
		t.Fatalf("level %v names %v", l.Level, l.LoggerNames)
	}
	want := map[string]string{"header": "X-Foo: [REDACTED]", "error": "401 for [REDACTED]", "count": "3", "mode": "on", "struct": `{"Token":"[REDACTED]"}`}
	for _, f := range l.Fields {
		if w, ok := want[f.Name]; ok && f.Value != w {
			t.Errorf("field %s = %q, want %q", f.Name, f.Value, w)
		}
	}
}

func TestLogLevels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   slog.Level
		want vpnpb.Log_Level
	}{
		{slog.LevelDebug, vpnpb.Log_DEBUG},
		{slog.LevelInfo, vpnpb.Log_INFO},
		{slog.LevelWarn, vpnpb.Log_WARN},
		{slog.LevelError, vpnpb.Log_ERROR},
		{slog.LevelCritical, vpnpb.Log_CRITICAL},
		{slog.LevelFatal, vpnpb.Log_FATAL},
	}
	for _, tc := range tests {
		t.Run(tc.in.String(), func(t *testing.T) {
			t.Parallel()
			if got := LogLevel(tc.in); got != tc.want {
				t.Fatalf("LogLevel(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

type panickyStringer struct{}

func (panickyStringer) String() string { panic("boom") }

func TestFormatLogValueNeverPanics(t *testing.T) {
	t.Parallel()
	for _, v := range []any{nil, panickyStringer{}, make(chan int), func() {}, []byte("x\x00"), map[string]any{"f": func() {}}} {
		_ = formatLogValue(v)
	}
}

// TestLogForwarderDropsAndReports fills the queue while the manager is not
// reading, checks LogEntry never blocks, then checks the drops are reported.
func TestLogForwarderDropsAndReports(t *testing.T) {
	t.Parallel()
	f := newLogForwarder(&redactor{}, 4)
	logger := slog.Make(f).Leveled(slog.LevelDebug)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			logger.Debug(context.Background(), fmt.Sprintf("line %d", i))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("LogEntry blocked on a full queue")
	}
	if got := f.dropped.Load(); got != 96 {
		t.Fatalf("dropped %d, want 96", got)
	}
	var mu sync.Mutex
	var got []*vpnpb.Log
	f.flush(func(l *vpnpb.Log) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, l)
		return nil
	})
	if len(got) != 5 {
		t.Fatalf("flushed %d logs, want 4 lines and a drop report: %v", len(got), got)
	}
	if got[0].Message != "line 0" {
		t.Fatalf("first log %q", got[0].Message)
	}
	rep := got[1]
	if rep.Level != vpnpb.Log_WARN || !strings.Contains(rep.Message, "96 log messages were dropped") {
		t.Fatalf("drop report %v", rep)
	}
	// Reported once only.
	logger.Info(context.Background(), "after")
	got = nil
	f.flush(func(l *vpnpb.Log) error { got = append(got, l); return nil })
	if len(got) != 1 || got[0].Message != "after" {
		t.Fatalf("after the report: %v", got)
	}
}

func TestLogForwarderRun(t *testing.T) {
	t.Parallel()
	f := newLogForwarder(&redactor{}, 8)
	received := make(chan *vpnpb.Log, 8)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.run(stop, func(l *vpnpb.Log) error { received <- l; return nil })
	}()
	slog.Make(f).Info(context.Background(), "hello", slog.F("k", "v"))
	select {
	case l := <-received:
		if l.Message != "hello" || len(l.Fields) != 1 || l.Fields[0].Value != "v" {
			t.Fatalf("log %v", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("log not forwarded")
	}
	close(stop)
	<-done
}

type captureSink struct {
	mu      sync.Mutex
	entries []slog.SinkEntry
}

func (c *captureSink) LogEntry(_ context.Context, e slog.SinkEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = append(c.entries, e)
}
func (*captureSink) Sync() {}

func TestLocalSinkRedacts(t *testing.T) {
	t.Parallel()
	r := &redactor{}
	r.setSecrets([]string{"s3cr3t-token"})
	c := &captureSink{}
	logger := slog.Make(localSink{logger: slog.Make(c), redactor: r})
	logger.Info(context.Background(), "token s3cr3t-token", slog.F("t", "s3cr3t-token"))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) != 1 {
		t.Fatalf("%d entries", len(c.entries))
	}
	e := c.entries[0]
	if strings.Contains(fmt.Sprint(e.Message, e.Fields), "s3cr3t") {
		t.Fatalf("secret reached the local logger: %v %v", e.Message, e.Fields)
	}
}

// Text without a secret, which is nearly all the engine logs, passes
// through the redactor without a copy; text with any one secret, long or
// short, still loses it.
func TestRedactCopiesOnlyWhatHoldsASecret(t *testing.T) {
	r := &redactor{}
	r.setSecrets(append(tokenSecrets("AbCdEf1234-SuperSecretPart99"), "hdr-value"))
	clean := strings.Repeat("peer fd60:627a:a42b::1 handshake ok; ", 100)
	if allocs := testing.AllocsPerRun(100, func() { _ = r.redact(clean) }); allocs != 0 {
		t.Errorf("redacting %d clean bytes allocated %.0f times, want 0", len(clean), allocs)
	}
	if got := r.redact(clean); got != clean {
		t.Errorf("clean text changed: %q", got)
	}
	tests := []struct{ name, in, want string }{
		{"whole token", "t=AbCdEf1234-SuperSecretPart99!", "t=[REDACTED]!"},
		{"secret part only", clean[:10] + "SuperSecretPart99", clean[:10] + "[REDACTED]"},
		{"header value", "x hdr-value y", "x [REDACTED] y"},
	}
	for _, tc := range tests {
		if got := r.redact(tc.in); got != tc.want {
			t.Errorf("%s: redact(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}
