package hosttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// Settings returns every NetworkSettingsRequest the tunnel sent, in order,
// whether it was applied, refused or ignored.
func (h *Host) Settings() []*vpnpb.NetworkSettingsRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*vpnpb.NetworkSettingsRequest(nil), h.settings...)
}

// Applied returns the configuration of the host's network stack: the latest
// NetworkSettingsRequest that was valid and accepted. ok is false until one
// was.
func (h *Host) Applied() (cfg NetConfig, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.applied == nil {
		return NetConfig{}, false
	}
	return *h.applied, true
}

// Logs returns every Log the tunnel sent, in order.
func (h *Host) Logs() []*vpnpb.Log {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*vpnpb.Log(nil), h.logs...)
}

// PeerUpdates returns every one-way PeerUpdate the tunnel sent, in order
// (replies to GetPeerUpdate are not included).
func (h *Host) PeerUpdates() []*vpnpb.PeerUpdate {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*vpnpb.PeerUpdate(nil), h.peerUpdates...)
}

// Peers returns a copy of the state the one-way PeerUpdates add up to.
func (h *Host) Peers() *PeerState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peers.Clone()
}

// wait re-checks cond (called with h.mu held) whenever anything recorded
// changes, until it holds, ctx ends, the session ends, or the Host closes.
// describe adds the latest state to a failure.
func (h *Host) wait(ctx context.Context, what string, cond func() bool, describe func() string) error {
	for {
		h.mu.Lock()
		ok := cond()
		changed, closed := h.changed, h.closed
		var done <-chan struct{}
		if h.sess != nil {
			done = h.sess.Done()
		}
		var state string
		if !ok && describe != nil {
			state = describe()
		}
		h.mu.Unlock()
		if ok {
			return nil
		}
		if state != "" {
			state = " (last: " + state + ")"
		}
		if closed {
			return fmt.Errorf("waiting for %s: the Host was closed%s", what, state)
		}
		select {
		case <-changed:
		case <-done:
			// Everything the tunnel sent before it went away is recorded
			// by now (the read loop has ended): one last look.
			h.mu.Lock()
			ok = cond()
			h.mu.Unlock()
			if ok {
				return nil
			}
			return fmt.Errorf("waiting for %s: the session ended: %v%s", what, h.Err(), state)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w%s", what, context.Cause(ctx), state)
		}
	}
}

// WaitPeerUpdate waits until cond holds for the merged PeerState and returns
// a copy of that state. cond sees the live state under the Host's lock: it
// must not keep or modify it, nor call the Host.
func (h *Host) WaitPeerUpdate(ctx context.Context, cond func(state *PeerState) bool) (*PeerState, error) {
	var got *PeerState
	err := h.wait(ctx, "a peer update", func() bool {
		if cond(h.peers) {
			got = h.peers.Clone()
			return true
		}
		return false
	}, func() string { return h.peers.String() })
	return got, err
}

// WaitSettings waits until the applied configuration satisfies cond (any
// applied configuration when cond is nil) and returns it.
func (h *Host) WaitSettings(ctx context.Context, cond func(NetConfig) bool) (NetConfig, error) {
	var got NetConfig
	err := h.wait(ctx, "network settings", func() bool {
		if h.applied != nil && (cond == nil || cond(*h.applied)) {
			got = *h.applied
			return true
		}
		return false
	}, func() string { return fmt.Sprintf("%d requests received, applied %+v", len(h.settings), h.applied) })
	return got, err
}

// WaitLog waits for a Log from the tunnel that satisfies cond (already
// received ones count) and returns the first such.
func (h *Host) WaitLog(ctx context.Context, cond func(*vpnpb.Log) bool) (*vpnpb.Log, error) {
	var got *vpnpb.Log
	err := h.wait(ctx, "a log message", func() bool {
		for _, l := range h.logs {
			if cond(l) {
				got = l
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("%d logs received", len(h.logs)) })
	return got, err
}

// DialTCP connects to addr through the tunnel, as a program on the host
// would: from the address and over the routes of the applied settings.
func (h *Host) DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	return h.net.DialTCP(ctx, addr)
}

// LookupAAAA resolves name the way the host's resolver would with the
// applied settings: the query goes over UDP through the tunnel to the first
// DNS server of the settings. Names outside the settings' match domains are
// refused with an error, since the OS would not send them to the tunnel.
func (h *Host) LookupAAAA(ctx context.Context, name string) ([]netip.Addr, error) {
	cfg, ok := h.Applied()
	if !ok {
		return nil, errors.New("hosttest: no network settings applied yet, so there is no DNS server to ask")
	}
	if len(cfg.DNSServers) == 0 {
		return nil, errors.New("hosttest: the applied network settings name no DNS server")
	}
	if !matchesDomains(name, cfg.MatchDomains) {
		return nil, fmt.Errorf("hosttest: %q is outside the match domains %q, so the OS would not ask the tunnel's DNS server", name, cfg.MatchDomains)
	}
	return h.net.LookupAAAA(ctx, cfg.DNSServers[0], name)
}

// matchesDomains reports whether name is one of domains or below one. No
// domains, or an empty one, matches everything (the servers are then the
// system's default resolvers).
func matchesDomains(name string, domains []string) bool {
	if len(domains) == 0 {
		return true
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, d := range domains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if d == "" || name == d || strings.HasSuffix(name, "."+d) {
			return true
		}
	}
	return false
}
