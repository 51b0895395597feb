package vpnlib

import (
	"errors"
	"testing"

	"cdr.dev/slog/v3"
)

// What the protocol engine logs through log/slog reaches the local logger
// under the name "codervpn", with its level mapped, its attributes (grouped
// ones flattened) as fields, and nothing below the tunnel's level.
func TestStdlibLoggerBridge(t *testing.T) {
	sink := &recordingSink{}
	logger := newStdlibLogger(sink, slog.LevelInfo, "codervpn").With("role", "tunnel")

	logger.Debug("below the level")
	logger.Warn("session ended", "error", errors.New("boom"), "msg_id", uint64(7))
	logger.WithGroup("frame").Info("dropped", "kind", "log")

	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.entries) != 2 {
		t.Fatalf("got %d entries, want 2 (debug filtered out): %+v", len(sink.entries), sink.entries)
	}
	warn := sink.entries[0]
	if warn.Level != slog.LevelWarn || warn.Message != "session ended" || len(warn.LoggerNames) != 1 || warn.LoggerNames[0] != "codervpn" {
		t.Errorf("entry %+v, want a warning named codervpn", warn)
	}
	want := map[string]any{"role": "tunnel", "error": "boom", "msg_id": uint64(7)}
	if len(warn.Fields) != len(want) {
		t.Errorf("fields %v, want %v", warn.Fields, want)
	}
	for _, f := range warn.Fields {
		got := f.Value
		if err, ok := got.(error); ok {
			got = err.Error()
		}
		if want[f.Name] != got {
			t.Errorf("field %s = %v, want %v", f.Name, got, want[f.Name])
		}
	}
	if warn.File == "" || warn.Line == 0 {
		t.Errorf("no caller location in %+v", warn)
	}
	info := sink.entries[1]
	if info.Level != slog.LevelInfo || len(info.Fields) != 2 || info.Fields[1].Name != "frame.kind" {
		t.Errorf("grouped entry %+v, want level info and the field frame.kind", info)
	}
}
