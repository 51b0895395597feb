package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/codervpn/codervpn/internal/status"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// tableRefresh is how often the status table is recomputed even when no
// PeerUpdate arrived: an agent turns "no recent handshake" by the clock alone.
const tableRefresh = 15 * time.Second

// settingsApplier applies one NetworkSettingsRequest to the host (the kernel
// through linuxhost, or a userspace stack); its error is what the tunnel is
// told, as the reason the settings were refused.
type settingsApplier func(context.Context, *vpnpb.NetworkSettingsRequest) error

// managerConfig configures the CLI's half of a CoderVPN session.
type managerConfig struct {
	Apply settingsApplier
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
}

// maxHeldLogs bounds the logs held back during Start.
const maxHeldLogs = 256

// manager plays the manager's part of the protocol for the CLI, the part the
// NetworkExtension or Coder Desktop plays elsewhere: it starts and stops the
// tunnel, applies the network settings it asks for, and turns its Log and
// PeerUpdate messages into what a person reads.
type manager struct {
	cfg managerConfig
	sp  *speaker.Manager

	ctx    context.Context // ends at Close: aborts settings being applied
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	peers    *status.Peers
	pending  []*vpnpb.TunnelMessage // settings requests for the worker, in order
	kick     chan struct{}          // wakes the worker; capacity 1
	changed  chan struct{}          // closed and replaced on every change
	applied  int                    // settings requests applied successfully
	settings []*vpnpb.NetworkSettingsRequest
	holding  bool
	held     []status.Event
	updates  int // PeerUpdates received
}

// newManager performs the handshake on r and w (bounded by ctx) and starts
// serving the tunnel. It owns r and w from now on, also on error.
func newManager(ctx context.Context, r io.ReadCloser, w io.WriteCloser, cfg managerConfig) (*manager, error) {
	mctx, cancel := context.WithCancel(context.Background())
	m := &manager{
		cfg: cfg, ctx: mctx, cancel: cancel,
		peers:   status.NewPeers(),
		kick:    make(chan struct{}, 1),
		changed: make(chan struct{}),
		holding: cfg.HoldLogs,
	}
	sp, err := speaker.NewManager(ctx, r, w, speaker.Options[*vpnpb.TunnelMessage]{
		OnRequest: m.onRequest,
		OnMessage: m.onMessage,
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("CoderVPN handshake with the tunnel: %w", err)
	}
	m.sp = sp
	cfg.Timeline.mark(milestoneHandshake, "protocol "+sp.Version().String())
	// Requests that arrived during the handshake are queued; the worker
	// starts only now because it needs the speaker to answer them.
	m.wg.Go(m.settingsWorker)
	m.wg.Go(m.refreshLoop)
	return m, nil
}

// onRequest runs on the speaker's read goroutine and must not block: it
// queues settings requests for the worker, which applies them in order.
func (m *manager) onRequest(req *vpnpb.TunnelMessage) {
	m.mu.Lock()
	m.pending = append(m.pending, req)
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *manager) settingsWorker() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.kick:
		}
		for {
			m.mu.Lock()
			if len(m.pending) == 0 {
				m.mu.Unlock()
				break
			}
			req := m.pending[0]
			m.pending = m.pending[1:]
			m.mu.Unlock()
			m.serve(req)
		}
	}
}

// serve answers one request from the tunnel. The only request a tunnel may
// send is NetworkSettings; anything else gets no answer (the tunnel's call
// times out) and is reported.
func (m *manager) serve(req *vpnpb.TunnelMessage) {
	ns := req.GetNetworkSettings()
	if ns == nil {
		m.emit(status.EventNotice, fmt.Sprintf("the tunnel sent an unexpected %T request; ignored", req.GetMsg()))
		return
	}
	resp := &vpnpb.NetworkSettingsResponse{Success: true}
	if err := m.cfg.Apply(m.ctx, ns); err != nil {
		resp = &vpnpb.NetworkSettingsResponse{ErrorMessage: err.Error()}
		m.emit(status.EventNotice, "could not apply the tunnel's network settings: "+err.Error())
	} else {
		m.cfg.Timeline.mark(milestoneSettings, describeSettings(ns))
		m.emit(status.EventProgress, "applied network settings: "+describeSettings(ns))
	}
	m.mu.Lock()
	if resp.Success {
		m.applied++
		m.settings = append(m.settings, ns)
	}
	m.notifyLocked()
	m.mu.Unlock()
	err := m.sp.Reply(req, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_NetworkSettings{NetworkSettings: resp}})
	if err != nil && !errors.Is(err, speaker.ErrClosed) {
		m.emit(status.EventNotice, "could not answer the tunnel's network settings request: "+err.Error())
	}
}

// onMessage handles the tunnel's one-way messages, on the read goroutine.
func (m *manager) onMessage(msg *vpnpb.TunnelMessage) {
	switch x := msg.GetMsg().(type) {
	case *vpnpb.TunnelMessage_Log:
		if x.Log.GetLevel() < m.cfg.MinLog {
			return
		}
		ev := status.Event{
			Time: time.Now(), Type: status.EventLog,
			Level:   strings.ToLower(x.Log.GetLevel().String()),
			Message: x.Log.GetMessage(),
		}
		if names := x.Log.GetLoggerNames(); len(names) > 0 || len(x.Log.GetFields()) > 0 {
			ev.Fields = make(map[string]string, len(x.Log.GetFields())+1)
			if len(names) > 0 {
				ev.Fields["logger"] = strings.Join(names, ".")
			}
			for _, f := range x.Log.GetFields() {
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
	case *vpnpb.TunnelMessage_PeerUpdate:
		m.cfg.Timeline.mark(milestonePeers, describePeerUpdate(x.PeerUpdate))
		m.mu.Lock()
		m.peers.Apply(x.PeerUpdate)
		m.updates++
		rows := m.peers.Rows(time.Now())
		m.notifyLocked()
		m.mu.Unlock()
		m.cfg.Out.Emit(status.Event{Time: time.Now(), Type: status.EventPeers, Peers: rows})
	}
}

// refreshLoop re-emits the table now and then; sinks print it only when it
// changed (an agent's handshake went stale).
func (m *manager) refreshLoop() {
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
func (m *manager) Start(ctx context.Context, req *vpnpb.StartRequest) error {
	reply, err := m.sp.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{Start: req}})
	if err != nil {
		return fmt.Errorf("start the tunnel: %w", err)
	}
	r := reply.GetStart()
	if r == nil {
		return fmt.Errorf("the tunnel answered the StartRequest with %T", reply.GetMsg())
	}
	m.cfg.Timeline.mark(milestoneStarted, fmt.Sprintf("success=%v", r.GetSuccess()))
	m.releaseLogs(r.GetSuccess())
	if !r.GetSuccess() {
		return &startError{msg: r.GetErrorMessage()}
	}
	return nil
}

// releaseLogs ends holding logs back, printing the held ones if print.
func (m *manager) releaseLogs(print bool) {
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
func (m *manager) Stop(ctx context.Context) error {
	reply, err := m.sp.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Stop{Stop: &vpnpb.StopRequest{}}})
	if err != nil {
		return fmt.Errorf("stop the tunnel: %w", err)
	}
	r := reply.GetStop()
	if r == nil {
		return fmt.Errorf("the tunnel answered the StopRequest with %T", reply.GetMsg())
	}
	m.cfg.Timeline.mark(milestoneStopResponse, fmt.Sprintf("success=%v", r.GetSuccess()))
	if !r.GetSuccess() {
		return fmt.Errorf("the tunnel stopped with an error: %s", r.GetErrorMessage())
	}
	return nil
}

// Done is closed when the session has ended, for whatever reason.
func (m *manager) Done() <-chan struct{} { return m.sp.Done() }

// Err says why the session ended; a clean close by the tunnel wraps io.EOF.
func (m *manager) Err() error { return m.sp.Err() }

// Close ends the session (if the tunnel has not) and waits for the
// manager's goroutines. It is idempotent.
func (m *manager) Close() error {
	err := m.sp.Close()
	m.cancel()
	m.wg.Wait()
	return err
}

// peerUpdates is how many PeerUpdates the tunnel has sent.
func (m *manager) peerUpdates() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.updates
}

// Rows is the status table as of now.
func (m *manager) Rows() []status.Row {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peers.Rows(time.Now())
}

// Wait blocks until cond (called with the manager's state locked) holds,
// the session ends, or ctx is done.
func (m *manager) Wait(ctx context.Context, cond func(v managerView) bool) error {
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
		case <-m.sp.Done():
			return fmt.Errorf("the tunnel session ended: %w", m.sp.Err())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// managerView is what a Wait condition may look at.
type managerView struct{ m *manager }

// Rows is the status table.
func (v managerView) Rows() []status.Row { return v.m.peers.Rows(time.Now()) }

// Settings lists the settings requests applied so far, oldest first.
func (v managerView) Settings() []*vpnpb.NetworkSettingsRequest { return v.m.settings }

func (m *manager) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *manager) emit(t status.EventType, msg string) {
	m.cfg.Out.Emit(status.Event{Time: time.Now(), Type: t, Message: msg})
}
