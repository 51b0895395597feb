package hosttest

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// errNotConnected is returned by calls made before Connect succeeded.
var errNotConnected = errors.New("hosttest: the manager is not connected; call Connect after starting the tunnel")

// Connect performs the handshake as the manager over the pipes and starts
// serving the tunnel's requests. The tunnel must be running on the other
// ends (it writes its header at the same time). ctx bounds the handshake
// only. A Host connects once: a failed handshake closes the manager's ends.
func (h *Host) Connect(ctx context.Context) error {
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		return errors.New("hosttest: Connect after Close")
	case h.connecting:
		h.mu.Unlock()
		return errors.New("hosttest: Connect called twice; a Host runs one session")
	}
	h.connecting = true
	h.mu.Unlock()

	s, err := speaker.NewManager(ctx, h.mgrR, h.mgrW, speaker.Options[*vpnpb.TunnelMessage]{
		Versions:  h.opts.Versions,
		OnRequest: h.onRequest,
		OnMessage: h.onMessage,
	})
	if err != nil {
		return fmt.Errorf("connect to the tunnel as its manager: %w", err)
	}
	h.mu.Lock()
	h.speaker = s
	closed := h.closed
	h.notifyLocked()
	h.mu.Unlock()
	close(h.ready)
	if closed { // Close ran during the handshake and saw no speaker to close
		s.Close()
		return errors.New("hosttest: the Host was closed during Connect")
	}
	return nil
}

// session returns the speaker once Connect has succeeded.
func (h *Host) session() (*speaker.Manager, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.speaker == nil {
		return nil, errNotConnected
	}
	return h.speaker, nil
}

// Version is the negotiated protocol version (zero before Connect).
func (h *Host) Version() speaker.Version {
	if s, err := h.session(); err == nil {
		return s.Version()
	}
	return speaker.Version{}
}

// Done is closed when the session ends: the tunnel closed its side (as it
// does after StopResponse), a frame was corrupt, or HangUp/Close. It is nil,
// and blocks forever, before Connect has succeeded.
func (h *Host) Done() <-chan struct{} {
	if s, err := h.session(); err == nil {
		return s.Done()
	}
	return nil
}

// Err says why the session ended (nil while it runs, or before Connect). A
// clean close by the tunnel wraps io.EOF.
func (h *Host) Err() error {
	if s, err := h.session(); err == nil {
		return s.Err()
	}
	return nil
}

// Call sends any ManagerMessage as a request and returns the tunnel's reply,
// for tests that need a request the typed helpers do not make.
func (h *Host) Call(ctx context.Context, msg *vpnpb.ManagerMessage) (*vpnpb.TunnelMessage, error) {
	s, err := h.session()
	if err != nil {
		return nil, err
	}
	return s.Call(ctx, msg)
}

// Send sends msg one-way (no msg_id). The protocol has no one-way manager
// messages; this exists to test how a tunnel copes with one.
func (h *Host) Send(msg *vpnpb.ManagerMessage) error {
	s, err := h.session()
	if err != nil {
		return err
	}
	return s.Send(msg)
}

// Start sends req (with tunnel_file_descriptor filled in when
// Options.SendTunFD is set; req itself is not modified) and returns the
// StartResponse. A StartResponse with success=false is returned as is, not
// as an error: errors are for a session that failed or a wrong reply.
func (h *Host) Start(ctx context.Context, req *vpnpb.StartRequest) (*vpnpb.StartResponse, error) {
	req = proto.CloneOf(req)
	if h.opts.SendTunFD {
		req.TunnelFileDescriptor = int32(h.tunFD)
	}
	reply, err := h.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{Start: req}})
	if err != nil {
		return nil, err
	}
	if r := reply.GetStart(); r != nil {
		return r, nil
	}
	return nil, wrongReply("StartRequest", "StartResponse", reply)
}

// Stop sends a StopRequest and returns the StopResponse. After a successful
// stop the tunnel closes its side: Done closes and Err wraps io.EOF.
func (h *Host) Stop(ctx context.Context) (*vpnpb.StopResponse, error) {
	reply, err := h.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Stop{Stop: &vpnpb.StopRequest{}}})
	if err != nil {
		return nil, err
	}
	if r := reply.GetStop(); r != nil {
		return r, nil
	}
	return nil, wrongReply("StopRequest", "StopResponse", reply)
}

// Wake tells the tunnel the system woke from sleep. With a negotiated
// version before 1.3 nothing is sent and the error wraps
// speaker.ErrUnsupportedByPeer.
func (h *Host) Wake(ctx context.Context) error {
	reply, err := h.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Wake{Wake: &vpnpb.WakeRequest{}}})
	if err != nil {
		return err
	}
	if reply.GetWake() == nil {
		return wrongReply("WakeRequest", "WakeResponse", reply)
	}
	return nil
}

// GetPeerUpdate asks for a full snapshot of workspaces and agents. The reply
// is returned as is and not merged into Peers, which holds the one-way
// updates only; NewPeerState(snapshot) gives it the same shape for
// comparison.
func (h *Host) GetPeerUpdate(ctx context.Context) (*vpnpb.PeerUpdate, error) {
	reply, err := h.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}})
	if err != nil {
		return nil, err
	}
	if r := reply.GetPeerUpdate(); r != nil {
		return r, nil
	}
	return nil, wrongReply("GetPeerUpdate", "PeerUpdate", reply)
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

// onRequest serves the tunnel's requests; it runs on the speaker's read
// goroutine, so it applies settings at once (keeping their order) and sends
// the reply from another goroutine.
func (h *Host) onRequest(req *vpnpb.TunnelMessage) {
	ns := req.GetNetworkSettings()
	if ns == nil {
		h.violate("the tunnel sent a %s request (msg_id %d); a manager serves only NetworkSettings",
			describe(req), req.GetRpc().GetMsgId())
		return
	}
	h.mu.Lock()
	h.settings = append(h.settings, proto.CloneOf(ns))
	h.notifyLocked()
	h.mu.Unlock()
	if h.opts.IgnoreSettings {
		return
	}
	resp := h.applySettings(ns)
	h.wg.Go(func() {
		<-h.ready // closed right after the handshake, before any request can matter
		s, _ := h.session()
		err := s.Reply(req, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_NetworkSettings{NetworkSettings: resp}})
		if err != nil && !errors.Is(err, speaker.ErrClosed) {
			h.violate("reply to NetworkSettings request %d: %v", req.GetRpc().GetMsgId(), err)
		}
	})
}

// applySettings configures the network stack from ns, unless told to refuse,
// and says how it went.
func (h *Host) applySettings(ns *vpnpb.NetworkSettingsRequest) *vpnpb.NetworkSettingsResponse {
	if h.opts.RefuseSettings != "" {
		return &vpnpb.NetworkSettingsResponse{Success: false, ErrorMessage: h.opts.RefuseSettings}
	}
	cfg, err := ParseSettings(ns)
	if err == nil {
		err = h.net.Apply(cfg)
	}
	if err != nil {
		return &vpnpb.NetworkSettingsResponse{Success: false, ErrorMessage: "invalid network settings: " + err.Error()}
	}
	h.mu.Lock()
	h.applied = &cfg
	h.notifyLocked()
	h.mu.Unlock()
	return &vpnpb.NetworkSettingsResponse{Success: true}
}

// onMessage records the tunnel's one-way messages.
func (h *Host) onMessage(msg *vpnpb.TunnelMessage) {
	switch m := msg.GetMsg().(type) {
	case *vpnpb.TunnelMessage_Log:
		h.mu.Lock()
		h.logs = append(h.logs, m.Log)
		h.notifyLocked()
		h.mu.Unlock()
		if h.opts.LogTunnelLogs {
			h.t.Logf("tunnel %s %v: %s %v", m.Log.GetLevel(), m.Log.GetLoggerNames(), m.Log.GetMessage(), m.Log.GetFields())
		}
	case *vpnpb.TunnelMessage_PeerUpdate:
		h.mu.Lock()
		h.peerUpdates = append(h.peerUpdates, m.PeerUpdate)
		err := h.peers.Apply(m.PeerUpdate)
		if err != nil {
			h.violations = append(h.violations, err)
		}
		h.notifyLocked()
		h.mu.Unlock()
	default:
		h.violate("the tunnel sent a one-way %s; only Log and PeerUpdate may be sent without a request", describe(msg))
	}
}
