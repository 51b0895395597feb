package vpnlib

import (
	"context"
	stdslog "log/slog"
	"runtime"
	"slices"

	"cdr.dev/slog/v3"
)

// stdlibHandler hands what a standard library logger records to one of our
// sinks. The protocol engine (package speaker) logs through log/slog, so
// that hosts link it without our logging library; the tunnel gives it this
// handler so those records reach the embedder's logger like its own.
type stdlibHandler struct {
	sink   slog.Sink
	level  slog.Level
	names  []string
	fields slog.Map
	group  string // prefix of the keys of attributes added now, "" or "g."
}

// newStdlibLogger returns a log/slog logger whose records at level and up
// reach sink under the logger name name.
func newStdlibLogger(sink slog.Sink, level slog.Level, name string) *stdslog.Logger {
	return stdslog.New(&stdlibHandler{sink: sink, level: level, names: []string{name}})
}

// Enabled implements log/slog.Handler.
func (h *stdlibHandler) Enabled(_ context.Context, l stdslog.Level) bool {
	return fromStdlibLevel(l) >= h.level
}

// Handle implements log/slog.Handler.
func (h *stdlibHandler) Handle(ctx context.Context, r stdslog.Record) error {
	e := slog.SinkEntry{
		Time:        r.Time.UTC(),
		Level:       fromStdlibLevel(r.Level),
		Message:     r.Message,
		LoggerNames: slices.Clone(h.names),
		Fields:      slices.Clone(h.fields),
	}
	r.Attrs(func(a stdslog.Attr) bool {
		e.Fields = appendAttr(e.Fields, h.group, a)
		return true
	})
	if r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		e.Func, e.File, e.Line = f.Function, f.File, f.Line
	}
	h.sink.LogEntry(ctx, e)
	return nil
}

// WithAttrs implements log/slog.Handler.
func (h *stdlibHandler) WithAttrs(attrs []stdslog.Attr) stdslog.Handler {
	c := *h
	c.fields = slices.Clone(h.fields)
	for _, a := range attrs {
		c.fields = appendAttr(c.fields, h.group, a)
	}
	return &c
}

// WithGroup implements log/slog.Handler: later keys are prefixed "name.".
func (h *stdlibHandler) WithGroup(name string) stdslog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.group = h.group + name + "."
	return &c
}

func appendAttr(fields slog.Map, prefix string, a stdslog.Attr) slog.Map {
	v := a.Value.Resolve()
	if v.Kind() == stdslog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, g := range v.Group() {
			fields = appendAttr(fields, prefix, g)
		}
		return fields
	}
	if a.Key == "" {
		return fields
	}
	return append(fields, slog.F(prefix+a.Key, v.Any()))
}

// fromStdlibLevel maps log/slog's levels onto ours.
func fromStdlibLevel(l stdslog.Level) slog.Level {
	switch {
	case l < stdslog.LevelInfo:
		return slog.LevelDebug
	case l < stdslog.LevelWarn:
		return slog.LevelInfo
	case l < stdslog.LevelError:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}
