package coderd

import (
	"context"
	"slices"
	"sync"
	"time"

	"cdr.dev/slog/v3"
)

// controlRetryMessages are what Coder's tailnet.Controller logs, at warning
// or error level, each time its control connection breaks or a redial fails.
// During an outage that is one line every few seconds, forever; the manager
// (and the user reading its log) gets controlHealth's single line instead,
// and these at debug level.
var controlRetryMessages = []string{
	"failed to dial tailnet v2+ API",
	"control plane connection closed, retrying",
	"control plane lost connection to database, retrying",
	"remote coordination error",
	"workspace updates stream error",
	"error receiving DERP Map",
	"error receiving refresh token",
	"error closing tailnet clients",
}

// DemoteRetries wraps the sink of the logger handed to Coder's tailnet
// controller: its complaint about every failed redial (controlRetryMessages)
// passes at debug level, everything else unchanged. The control dialer's
// health logger says the same once per change of condition instead.
func DemoteRetries(next slog.Sink) slog.Sink { return demoteRetrySink{next: next} }

// demoteRetrySink passes entries on, with controlRetryMessages lowered to
// debug level.
type demoteRetrySink struct{ next slog.Sink }

func (s demoteRetrySink) LogEntry(ctx context.Context, e slog.SinkEntry) {
	if e.Level > slog.LevelDebug && slices.Contains(controlRetryMessages, e.Message) {
		e.Level = slog.LevelDebug
	}
	s.next.LogEntry(ctx, e)
}

func (s demoteRetrySink) Sync() { s.next.Sync() }

// controlHealth turns the outcomes of control-connection dials into one line
// per change of condition: lost, unreachable (once, however many retries),
// back. Before the first successful dial it says nothing: the Start in
// progress reports that failure in its reply.
type controlHealth struct {
	logger slog.Logger
	now    func() time.Time

	mu        sync.Mutex
	connected bool      // the latest dial succeeded
	everUp    bool      // a dial has succeeded once
	down      bool      // unreachable has been reported
	lostAt    time.Time // when the last good connection ended
}

func newControlHealth(logger slog.Logger) *controlHealth {
	return &controlHealth{logger: logger, now: time.Now}
}

// dialing is called before every dial: a dial after a successful one means
// that connection ended.
func (h *controlHealth) dialing(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.connected {
		h.connected = false
		h.lostAt = h.now()
		h.logger.Info(ctx, "the control connection to the deployment ended; reconnecting")
	}
}

// dialed records a dial's outcome.
func (h *controlHealth) dialed(ctx context.Context, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		if h.everUp {
			h.logger.Info(ctx, "reconnected to the deployment",
				slog.F("after", h.now().Sub(h.lostAt).Round(time.Millisecond).String()))
		}
		h.connected, h.everUp, h.down = true, true, false
		return
	}
	if !h.everUp || ctx.Err() != nil {
		return
	}
	if !h.down {
		h.down = true
		h.logger.Warn(ctx, "cannot reach the deployment; connections to workspaces that are already up keep working where they can, and the tunnel keeps retrying",
			slog.Error(err))
		return
	}
	h.logger.Debug(ctx, "still cannot reach the deployment", slog.Error(err))
}
