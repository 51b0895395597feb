package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/codervpn/codervpn/internal/status"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/manager"
)

// tableRefresh is how often the status table is recomputed even when no
// PeerUpdate arrived: an agent turns "no recent handshake" by the clock alone.
const tableRefresh = 15 * time.Second

// managerConfig configures the CLI's half of a CoderVPN session.
type managerConfig struct {
	// Settings applies the tunnel's network settings to the host (the
	// kernel through linuxnet, or a userspace stack).
	Settings manager.SettingsApplier
	// Out receives progress, notices, forwarded logs and the status table.
	Out status.Sink
	// MinLog is the lowest level of tunnel Log message passed to Out.
	MinLog vpnpb.Log_Level
	// Timeline, if set, records when each milestone first happened.
	Timeline *timeline
	// HoldLogs keeps forwarded logs back until Start has been answered: on
	// success they are printed then, on failure dropped, because the
	// StartResponse's message says in one line what the logs say in many.
	HoldLogs bool
	// OnPeerUpdate, if set, gets each PeerUpdate as the tunnel sent it (the
	// service keeps its own picture for its clients).
	OnPeerUpdate func(*vpnpb.PeerUpdate)
}

// maxHeldLogs bounds the logs held back during Start.
const maxHeldLogs = 256

// cliManager is the CLI's part of the manager's role, the part the
// NetworkExtension or Coder Desktop plays elsewhere: on top of a
// manager.Session, which speaks the protocol and applies the settings, it
// turns the session into what a person reads (progress, notices, logs, the
// status table) and records milestones.
type cliManager struct {
	cfg  managerConfig
	sess *manager.Session

	ctx    context.Context // ends at Close: stops the refresh loop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	peers    *manager.Peers
	changed  chan struct{}                   // closed and replaced on every change
	settings []*vpnpb.NetworkSettingsRequest // applied successfully, oldest first
	holding  bool
	held     []status.Event
}

// newManager performs the handshake on r and w (bounded by ctx) and starts
// serving the tunnel. It owns r and w from now on, also on error.
func newManager(ctx context.Context, r io.ReadCloser, w io.WriteCloser, cfg managerConfig) (*cliManager, error) {
	mctx, cancel := context.WithCancel(context.Background())
	peers, _ := manager.NewPeers()
	m := &cliManager{
		cfg: cfg, ctx: mctx, cancel: cancel,
		peers:   peers,
		changed: make(chan struct{}),
		holding: cfg.HoldLogs,
	}
	sess, err := manager.Connect(ctx, r, w, manager.Config{
		Settings:     manager.ApplierFunc(m.applySettings),
		OnLog:        m.onLog,
		OnPeerUpdate: m.onPeerUpdate,
		OnViolation:  func(err error) { m.emit(status.EventNotice, err.Error()) },
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("CoderVPN handshake with the tunnel: %w", err)
	}
	m.sess = sess
	cfg.Timeline.mark(milestoneHandshake, "protocol "+sess.Version().String())
	m.wg.Go(m.refreshLoop)
	return m, nil
}

// applySettings applies one settings request and tells the person how it
// went; its error is the tunnel's answer.
func (m *cliManager) applySettings(ctx context.Context, ns *vpnpb.NetworkSettingsRequest) error {
	err := m.cfg.Settings.ApplySettings(ctx, ns)
	if err != nil {
		m.emit(status.EventNotice, "could not apply the tunnel's network settings: "+err.Error())
	} else {
		m.cfg.Timeline.mark(milestoneSettings, describeSettings(ns))
		m.emit(status.EventProgress, "applied network settings: "+describeSettings(ns))
	}
	m.mu.Lock()
	if err == nil {
		m.settings = append(m.settings, ns)
	}
	m.notifyLocked()
	m.mu.Unlock()
	return err
}

// onLog passes a tunnel log on, or holds it back during Start.
func (m *cliManager) onLog(l *vpnpb.Log) {
	if l.GetLevel() < m.cfg.MinLog {
		return
	}
	ev := status.Event{
		Time: time.Now(), Type: status.EventLog,
		Level:   strings.ToLower(l.GetLevel().String()),
		Message: l.GetMessage(),
	}
	if names := l.GetLoggerNames(); len(names) > 0 || len(l.GetFields()) > 0 {
		ev.Fields = make(map[string]string, len(l.GetFields())+1)
		if len(names) > 0 {
			ev.Fields["logger"] = strings.Join(names, ".")
		}
		for _, f := range l.GetFields() {
			ev.Fields[f.GetName()] = f.GetValue()
		}
	}
	m.mu.Lock()
	if m.holding {
		if len(m.held) < maxHeldLogs {
			m.held = append(m.held, ev)
		}
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	m.cfg.Out.Emit(ev)
}

// onPeerUpdate merges a PeerUpdate into the picture and shows the table.
func (m *cliManager) onPeerUpdate(u *vpnpb.PeerUpdate) {
	m.cfg.Timeline.mark(milestonePeers, describePeerUpdate(u))
	if m.cfg.OnPeerUpdate != nil {
		m.cfg.OnPeerUpdate(u)
	}
	m.mu.Lock()
	_ = m.peers.Apply(u) // records a manager cannot key are left out of the table
	rows := status.Rows(m.peers, time.Now())
	m.notifyLocked()
	m.mu.Unlock()
	m.cfg.Out.Emit(status.Event{Time: time.Now(), Type: status.EventPeers, Peers: rows})
}

// refreshLoop re-emits the table now and then; sinks print it only when it
// changed (an agent's handshake went stale).
func (m *cliManager) refreshLoop() {
	t := time.NewTicker(tableRefresh)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			m.cfg.Out.Emit(status.Event{Time: time.Now(), Type: status.EventPeers, Peers: m.Rows()})
		}
	}
}

// Start sends the StartRequest and returns the tunnel's verdict: the
// StartResponse's error message, verbatim, when it failed.
func (m *cliManager) Start(ctx context.Context, req *vpnpb.StartRequest) error {
	r, err := m.sess.Start(ctx, req)
	if err != nil {
		return fmt.Errorf("start the tunnel: %w", err)
	}
	m.cfg.Timeline.mark(milestoneStarted, fmt.Sprintf("success=%v", r.GetSuccess()))
	m.releaseLogs(r.GetSuccess())
	if !r.GetSuccess() {
		return &startError{msg: r.GetErrorMessage()}
	}
	return nil
}

// releaseLogs ends holding logs back, printing the held ones if print.
func (m *cliManager) releaseLogs(print bool) {
	m.mu.Lock()
	held := m.held
	m.held, m.holding = nil, false
	m.mu.Unlock()
	if print {
		for _, ev := range held {
			m.cfg.Out.Emit(ev)
		}
	}
}

// startError is a StartResponse with success=false: the tunnel's own
// explanation, shown to the person as is.
type startError struct{ msg string }

func (e *startError) Error() string {
	if e.msg == "" {
		return "the tunnel could not start (it gave no reason)"
	}
	return e.msg
}

// Stop asks the tunnel to stop and returns once it has answered. The
// tunnel then closes its side of the session; Done reports that. (Through
// the C host the end of the stream comes only once the host has called
// coderStopVPN and exited, because it keeps its own copy of the fd.)
func (m *cliManager) Stop(ctx context.Context) error {
	r, err := m.sess.Stop(ctx)
	if err != nil {
		return fmt.Errorf("stop the tunnel: %w", err)
	}
	m.cfg.Timeline.mark(milestoneStopResponse, fmt.Sprintf("success=%v", r.GetSuccess()))
	if !r.GetSuccess() {
		return fmt.Errorf("the tunnel stopped with an error: %s", r.GetErrorMessage())
	}
	return nil
}

// Done is closed when the session has ended, for whatever reason.
func (m *cliManager) Done() <-chan struct{} { return m.sess.Done() }

// Err says why the session ended; a clean close by the tunnel wraps io.EOF.
func (m *cliManager) Err() error { return m.sess.Err() }

// Close ends the session (if the tunnel has not) and waits for the
// manager's goroutines. It is idempotent.
func (m *cliManager) Close() error {
	err := m.sess.Close()
	m.cancel()
	m.wg.Wait()
	return err
}

// peerUpdates is how many PeerUpdates the tunnel has sent.
func (m *cliManager) peerUpdates() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peers.Updates
}

// Rows is the status table as of now.
func (m *cliManager) Rows() []status.Row {
	m.mu.Lock()
	defer m.mu.Unlock()
	return status.Rows(m.peers, time.Now())
}

// Wait blocks until cond (called with the manager's state locked) holds,
// the session ends, or ctx is done.
func (m *cliManager) Wait(ctx context.Context, cond func(v managerView) bool) error {
	for {
		m.mu.Lock()
		ok := cond(managerView{m})
		ch := m.changed
		m.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-m.sess.Done():
			return fmt.Errorf("the tunnel session ended: %w", m.sess.Err())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// managerView is what a Wait condition may look at.
type managerView struct{ m *cliManager }

// Rows is the status table.
func (v managerView) Rows() []status.Row { return status.Rows(v.m.peers, time.Now()) }

// Settings lists the settings requests applied so far, oldest first.
func (v managerView) Settings() []*vpnpb.NetworkSettingsRequest { return v.m.settings }

func (m *cliManager) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *cliManager) emit(t status.EventType, msg string) {
	m.cfg.Out.Emit(status.Event{Time: time.Now(), Type: t, Message: msg})
}
