package hosttest

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/codervpn/codervpn/internal/netstack"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/manager"
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

	s, err := manager.Connect(ctx, h.mgrR, h.mgrW, manager.Config{
		Versions:     h.opts.Versions,
		Settings:     manager.ApplierFunc(h.applySettings),
		OnLog:        h.onLog,
		OnPeerUpdate: h.onPeerUpdate,
		OnViolation:  func(err error) { h.violate("%w", err) },
	})
	if err != nil {
		return fmt.Errorf("connect to the tunnel as its manager: %w", err)
	}
	h.mu.Lock()
	h.sess = s
	closed := h.closed
	h.notifyLocked()
	h.mu.Unlock()
	if closed { // Close ran during the handshake and saw no session to close
		s.Close()
		return errors.New("hosttest: the Host was closed during Connect")
	}
	return nil
}

// session returns the manager's session once Connect has succeeded.
func (h *Host) session() (*manager.Session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sess == nil {
		return nil, errNotConnected
	}
	return h.sess, nil
}

// Version is the negotiated protocol version (zero before Connect).
func (h *Host) Version() speaker.Version {
	if s, err := h.session(); err == nil {
		return s.Version()
	}
	return speaker.Version{}
}

// Done is closed when the session ends (the tunnel closed its side, as it
// does after StopResponse, a frame was corrupt, or HangUp/Close) and
// everything the tunnel sent before is recorded. It is nil, and blocks
// forever, before Connect has succeeded.
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
// for tests that need a request the typed helpers do not make. Like every
// call, it returns once what the tunnel sent before the reply is recorded.
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
	s, err := h.session()
	if err != nil {
		return nil, err
	}
	req = proto.CloneOf(req)
	if h.opts.SendTunFD {
		req.TunnelFileDescriptor = int32(h.tunFD)
	}
	return s.Start(ctx, req)
}

// Stop sends a StopRequest and returns the StopResponse. After a successful
// stop the tunnel closes its side: Done closes and Err wraps io.EOF.
func (h *Host) Stop(ctx context.Context) (*vpnpb.StopResponse, error) {
	s, err := h.session()
	if err != nil {
		return nil, err
	}
	return s.Stop(ctx)
}

// Wake tells the tunnel the system woke from sleep. With a negotiated
// version before 1.3 nothing is sent and the error wraps
// speaker.ErrUnsupportedByPeer.
func (h *Host) Wake(ctx context.Context) error {
	s, err := h.session()
	if err != nil {
		return err
	}
	return s.Wake(ctx)
}

// GetPeerUpdate asks for a full snapshot of workspaces and agents. The reply
// is returned as is and not merged into Peers, which holds the one-way
// updates only; manager.NewPeers(snapshot) gives it the same shape for
// comparison.
func (h *Host) GetPeerUpdate(ctx context.Context) (*vpnpb.PeerUpdate, error) {
	s, err := h.session()
	if err != nil {
		return nil, err
	}
	return s.GetPeerUpdate(ctx)
}

// applySettings is the host's SettingsApplier: it records the request, then
// configures the network stack from it, unless told to refuse or ignore it.
func (h *Host) applySettings(_ context.Context, ns *vpnpb.NetworkSettingsRequest) error {
	h.mu.Lock()
	h.settings = append(h.settings, proto.CloneOf(ns))
	h.notifyLocked()
	h.mu.Unlock()
	switch {
	case h.opts.IgnoreSettings:
		return manager.ErrNoAnswer
	case h.opts.RefuseSettings != "":
		return errors.New(h.opts.RefuseSettings)
	}
	cfg, err := netstack.ParseSettings(ns)
	if err == nil && h.opts.MergeSettings {
		h.mu.Lock()
		cfg = mergeSettings(h.applied, ns, cfg)
		h.mu.Unlock()
	}
	if err == nil {
		err = h.net.Apply(cfg)
	}
	if err != nil {
		return fmt.Errorf("invalid network settings: %w", err)
	}
	h.mu.Lock()
	h.applied = &cfg
	h.notifyLocked()
	h.mu.Unlock()
	return nil
}

// onLog records a Log from the tunnel.
func (h *Host) onLog(l *vpnpb.Log) {
	h.mu.Lock()
	h.logs = append(h.logs, l)
	h.notifyLocked()
	h.mu.Unlock()
	if h.opts.LogTunnelLogs {
		h.t.Logf("tunnel %s %v: %s %v", l.GetLevel(), l.GetLoggerNames(), l.GetMessage(), l.GetFields())
	}
}

// onPeerUpdate records a one-way PeerUpdate and merges it into Peers; ids
// a manager cannot key are violations.
func (h *Host) onPeerUpdate(u *vpnpb.PeerUpdate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.peerUpdates = append(h.peerUpdates, u)
	if err := h.peers.Apply(u); err != nil {
		h.violations = append(h.violations, err)
	}
	h.notifyLocked()
}

// mergeSettings is cfg (parsed from req) with what req left out taken from
// prev, for Options.MergeSettings.
func mergeSettings(prev *NetConfig, req *vpnpb.NetworkSettingsRequest, cfg netstack.Config) netstack.Config {
	if prev == nil {
		return cfg
	}
	if req.GetIpv4Settings() == nil && req.GetIpv6Settings() == nil {
		cfg.Addrs, cfg.Routes, cfg.ExcludedRoutes = prev.Addrs, prev.Routes, prev.ExcludedRoutes
	}
	if req.GetDnsSettings() == nil {
		cfg.DNSServers, cfg.MatchDomains = prev.DNSServers, prev.MatchDomains
	}
	if req.GetMtu() == 0 {
		cfg.MTU = prev.MTU
	}
	return cfg
}
