package hosttest

import "github.com/codervpn/codervpn/internal/netstack"

// The host's network stack is package internal/netstack, which the CLI's
// demo uses too and which must not import package testing. These names keep
// it reachable from tests as part of hosttest.

// Netstack is a userspace TCP/IP stack (gVisor) whose only interface is a
// file descriptor carrying one IP packet per datagram behind the 4-byte utun
// header. A Host uses one on its end of the socketpair (Host.Netstack), and a
// test can put a second one on the tunnel's end (netstack.New) to play a
// peer without any tunnel. A Netstack starts with no address and no route; Apply
// (or AddAddress and AddRoute) configures it.
type Netstack = netstack.Stack

// NetConfig is a NetworkSettingsRequest as the host's network stack applies
// it: parsed, validated, and without the parts a Netstack has no use for.
type NetConfig = netstack.Config
