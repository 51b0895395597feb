package hosttest

import (
	"github.com/codervpn/codervpn/internal/netstack"
	"github.com/codervpn/codervpn/vpnlib/manager"
)

// The host's network stack is package internal/netstack, which the CLI's
// demo uses too and which must not import package testing. These names keep
// it reachable from tests as part of hosttest.

// Netstack is a userspace TCP/IP stack (gVisor) whose only interface is a
// file descriptor carrying one IP packet per datagram behind the 4-byte utun
// header. A Host uses one on its end of the socketpair (Host.Netstack), and a
// test can put a second one on the tunnel's end (NewNetstack) to play a peer
// without any tunnel. A Netstack starts with no address and no route; Apply
// (or AddAddress and AddRoute) configures it.
type Netstack = netstack.Stack

// NetstackStats counts packets crossing a Netstack's utun link.
type NetstackStats = netstack.Stats

// NetConfig is a NetworkSettingsRequest as the host's network stack applies
// it: parsed, validated, and without the parts a Netstack has no use for.
type NetConfig = netstack.Config

// NewNetstack attaches a new stack to fd, which must be a packet socket (or
// utun device) that carries utun-framed packets. The Netstack works on its
// own duplicate of fd, made non-blocking; the caller keeps fd. Note that
// O_NONBLOCK is shared with every duplicate of fd. mtu is the initial link
// MTU; settings applied later may change it.
func NewNetstack(fd int, mtu uint32) (*Netstack, error) {
	return netstack.New(fd, mtu)
}

// PeerState is the picture of workspaces and agents the tunnel's one-way
// PeerUpdates add up to (see manager.Peers); Peers and WaitPeerUpdate
// return it.
type PeerState = manager.Peers
