package vpnlib

import (
	"context"
	"net/netip"
	"slices"

	"tailscale.com/net/interfaces"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"
)

// Why the tunnel renews the engine's paths when a local address goes away
// (issue 17, the soak's 7-second answers):
//
// The engine takes a direct path to an agent through whichever address
// answered its disco pings, and keeps sending there for 6.5 s after the
// last pong (magicsock's trust window) without looking at send errors. Its
// network monitor calls a change "major", which makes the engine rebind and
// forget those paths, only when an interface it still sees changed: an
// interface that was deleted (a veth, a container bridge, another VPN's
// device) is not compared at all, so the change is "minor". A path through
// an address of a deleted interface was then used until the trust window
// ran out: every packet of those 6.5 s lost, a new TCP connection answered
// after its third SYN retransmission, 7 s. (Measured with TestSoak, whose
// agents live on the same machine and whose paths went through addresses
// of veths another test package created and deleted.)
//
// So the tunnel compares the addresses itself and, when one it saw before
// is gone, rebinds the engine (tailnet.Conn.Rebind: new sockets, every
// peer's path forgotten, a fresh STUN): packets go through DERP at once
// while the engine finds the direct paths still alive.

// localAddrs returns the interesting addresses (not loopback, not link
// local, not the tailnet's own) of every interface in st.
func localAddrs(st *interfaces.State) []netip.Addr {
	if st == nil {
		return nil
	}
	var out []netip.Addr
	for _, pfxs := range st.InterfaceIPs {
		for _, p := range pfxs {
			a := p.Addr()
			if !interfaces.UseInterestingIPs(a) || tailnet.CoderServicePrefix.AsNetip().Contains(a) ||
				tailnet.TailscaleServicePrefix.AsNetip().Contains(a) {
				continue
			}
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

// goneAddrs returns the addresses of before that are not in now (both
// sorted, as localAddrs returns them).
func goneAddrs(before, now []netip.Addr) []netip.Addr {
	var gone []netip.Addr
	for _, a := range before {
		if _, found := slices.BinarySearchFunc(now, a, func(x, y netip.Addr) int { return x.Compare(y) }); !found {
			gone = append(gone, a)
		}
	}
	return gone
}

// addrWatch remembers the machine's addresses between the network
// monitor's reports; check is called from one goroutine only.
type addrWatch struct {
	last   []netip.Addr
	rebind func()
	logger slog.Logger
}

// check rebinds when an address seen in the last report is gone from st.
func (w *addrWatch) check(ctx context.Context, st *interfaces.State) {
	now := localAddrs(st)
	gone := goneAddrs(w.last, now)
	w.last = now
	if len(gone) == 0 {
		return
	}
	w.logger.Info(ctx, "a local address went away: renewing the engine's direct paths, which may have used it",
		slog.F("gone", gone))
	w.rebind()
}

// currentState reads the machine's interfaces now. The monitor's callback
// is no help here: it hands over the state of the last major change, and a
// deleted interface makes only a minor one.
func currentState(ctx context.Context, logger slog.Logger) *interfaces.State {
	st, err := interfaces.GetState()
	if err != nil {
		logger.Warn(ctx, "read the machine's network interfaces (to see whether an address the engine may use went away)", slog.Error(err))
		return nil
	}
	return st
}
