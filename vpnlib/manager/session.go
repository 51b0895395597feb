package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/codervpn/codervpn/internal/progress"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// SettingsApplier applies the tunnel's network settings to the host: the
// kernel's interface and resolver, a NetworkExtension's settings, a
// userspace stack. Each NetworkSettingsRequest carries the complete
// configuration, and they are applied one at a time, in the order the
// tunnel sent them. The error is what the tunnel is told, as the reason the
// settings were refused; ErrNoAnswer leaves the request unanswered.
type SettingsApplier interface {
	ApplySettings(ctx context.Context, req *vpnpb.NetworkSettingsRequest) error
}

// ApplierFunc is a SettingsApplier made of a function.
type ApplierFunc func(ctx context.Context, req *vpnpb.NetworkSettingsRequest) error

// ApplySettings implements SettingsApplier.
func (f ApplierFunc) ApplySettings(ctx context.Context, req *vpnpb.NetworkSettingsRequest) error {
	return f(ctx, req)
}

// ErrNoAnswer, returned by a SettingsApplier, leaves the request without a
// reply: the tunnel's call then runs into its own timeout. Only a test of
// that timeout wants it.
var ErrNoAnswer = errors.New("leave the network settings request unanswered")

// Config configures the manager's end of a session. The callbacks run one
// at a time on the session's worker goroutine, in the order the tunnel sent
// what they get, interleaved with the settings being applied; they must not
// call Close.
type Config struct {
	// Versions are the protocol versions offered in the handshake; empty
	// means speaker.CurrentVersion. An older list plays an older host.
	Versions []speaker.Version
	// Settings applies each NetworkSettingsRequest. Required.
	Settings SettingsApplier
	// OnLog gets each Log message of the tunnel.
	OnLog func(*vpnpb.Log)
	// OnPeerUpdate gets each one-way PeerUpdate (replies to GetPeerUpdate
	// are returned by GetPeerUpdate instead). A host keeps its picture of
	// the workspaces by applying them to a Peers in this order.
	OnPeerUpdate func(*vpnpb.PeerUpdate)
	// OnViolation gets what the tunnel sent that a manager does not accept
	// (a request other than NetworkSettings, a one-way message other than
	// Log and PeerUpdate) and a settings reply that could not be written.
	// The session goes on.
	OnViolation func(error)
}

// Session is the manager's end of one CoderVPN session: it starts, stops
// and wakes the tunnel and asks it for peer updates, and serves what the
// tunnel sends on one worker goroutine, in order. Its methods are safe for
// concurrent use.
type Session struct {
	cfg Config
	sp  *speaker.Manager

	ctx    context.Context // ends at Close: aborts settings being applied
	cancel context.CancelFunc
	done   chan struct{} // closed when the worker has handled everything and exited

	handled progress.Count // messages the worker has handled

	mu       sync.Mutex
	queue    []*vpnpb.TunnelMessage // received, not yet handled, in order
	kick     chan struct{}          // wakes the worker; capacity 1
	received uint64
}

// Connect performs the handshake as the manager on r and w (bounded by
// ctx, which does not bound the session after it) and starts serving the
// tunnel. The session owns r and w from now on, also on error.
func Connect(ctx context.Context, r io.ReadCloser, w io.WriteCloser, cfg Config) (*Session, error) {
	if cfg.Settings == nil {
		_, _ = r.Close(), w.Close()
		return nil, errors.New("manager.Config.Settings is nil: a manager must answer the tunnel's network settings")
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		cfg: cfg, ctx: sctx, cancel: cancel,
		done: make(chan struct{}),
		kick: make(chan struct{}, 1),
	}
	sp, err := speaker.NewManager(ctx, r, w, speaker.Options[*vpnpb.TunnelMessage]{
		Versions:  cfg.Versions,
		OnRequest: s.receive,
		OnMessage: s.receive,
	})
	if err != nil {
		cancel()
		return nil, err
	}
	s.sp = sp
	// What arrived during the handshake is queued; the worker starts only
	// now because it needs the speaker to answer.
	go s.run()
	return s, nil
}

// Version is the negotiated protocol version.
func (s *Session) Version() speaker.Version { return s.sp.Version() }

// Done is closed when the session has ended (the tunnel closed its side,
// as it does after the StopResponse; a frame was corrupt; Close) and
// everything the tunnel sent before has been handled.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why the session ended, nil while it runs. A clean close by the
// tunnel wraps io.EOF.
func (s *Session) Err() error { return s.sp.Err() }

// Close ends the session, if the tunnel has not, and waits for the worker,
// which handles what was already received (with a canceled context, so a
// settings application gives up). It is idempotent.
func (s *Session) Close() error {
	err := s.sp.Close()
	s.cancel()
	<-s.done
	return err
}

// Call sends any ManagerMessage as a request and returns the tunnel's
// reply, once everything the tunnel sent before that reply has been
// handled: after a StartResponse, the settings that preceded it are
// applied and the logs of the Start delivered. (Waiting for that gives up
// when ctx ends; the reply is returned all the same.)
func (s *Session) Call(ctx context.Context, msg *vpnpb.ManagerMessage) (*vpnpb.TunnelMessage, error) {
	reply, err := s.sp.Call(ctx, msg)
	if err != nil {
		return nil, err
	}
	s.catchUp(ctx)
	return reply, nil
}

// Send sends msg one-way. The protocol has no one-way manager messages;
// it exists to test how a tunnel copes with one.
func (s *Session) Send(msg *vpnpb.ManagerMessage) error { return s.sp.Send(msg) }

// Start sends req and returns the StartResponse. One with success=false is
// returned as is, not as an error: errors are for a session that failed or
// a wrong reply.
func (s *Session) Start(ctx context.Context, req *vpnpb.StartRequest) (*vpnpb.StartResponse, error) {
	return typedCall(ctx, s, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{Start: req}},
		(*vpnpb.TunnelMessage).GetStart, "StartRequest", "StartResponse")
}

// Stop sends a StopRequest and returns the StopResponse. After it the
// tunnel closes its side, and the session ends.
func (s *Session) Stop(ctx context.Context) (*vpnpb.StopResponse, error) {
	return typedCall(ctx, s, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Stop{Stop: &vpnpb.StopRequest{}}},
		(*vpnpb.TunnelMessage).GetStop, "StopRequest", "StopResponse")
}

// Wake tells the tunnel the system woke from sleep. Below protocol 1.3
// nothing is sent and the error wraps speaker.ErrUnsupportedByPeer.
func (s *Session) Wake(ctx context.Context) error {
	_, err := typedCall(ctx, s, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Wake{Wake: &vpnpb.WakeRequest{}}},
		(*vpnpb.TunnelMessage).GetWake, "WakeRequest", "WakeResponse")
	return err
}

// GetPeerUpdate asks for a full snapshot of workspaces and agents.
func (s *Session) GetPeerUpdate(ctx context.Context) (*vpnpb.PeerUpdate, error) {
	return typedCall(ctx, s, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}},
		(*vpnpb.TunnelMessage).GetPeerUpdate, "GetPeerUpdate", "PeerUpdate")
}

// typedCall sends msg and returns the part of the reply that get picks (a
// nil pointer when the reply carries something else, which is an error
// naming both).
func typedCall[T comparable](ctx context.Context, s *Session, msg *vpnpb.ManagerMessage,
	get func(*vpnpb.TunnelMessage) T, req, want string,
) (T, error) {
	var none T
	reply, err := s.Call(ctx, msg)
	if err != nil {
		return none, err
	}
	if r := get(reply); r != none {
		return r, nil
	}
	return none, wrongReply(req, want, reply)
}

func wrongReply(req, want string, got *vpnpb.TunnelMessage) error {
	return fmt.Errorf("the tunnel answered %s with %s, want %s", req, describe(got), want)
}

// describe names the message kind inside a TunnelMessage.
func describe(m *vpnpb.TunnelMessage) string {
	if m.GetMsg() == nil {
		return "an empty TunnelMessage"
	}
	return fmt.Sprintf("%T", m.GetMsg())
}
