// Package hosttest is an in-process stand-in for the host of a CoderVPN
// tunnel: the manager side of the CoderVPN protocol (what Coder Desktop or
// our CLI does over the pipe pair) and the operating system's network stack
// behind the tunnel device (what macOS does with a utun interface).
//
// It plays the role net/http/httptest plays for HTTP handlers. A test makes a
// Host, hands the tunnel under test the Host's ends of the fds
// (TunnelFiles, TunnelFDs), connects, and then drives the session the way a
// real host would:
//
//	h := hosttest.New(t, hosttest.Options{})
//	tun, read, write := h.TunnelFiles()
//	... start the tunnel on tun, read, write ...
//	h.Connect(ctx)                       // handshake as the manager
//	resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: u, ApiToken: tok})
//	st, err := h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool { return s.Agent("ws", "main") != nil })
//	conn, err := h.DialTCP(ctx, netip.AddrPortFrom(agentIP, 80)) // through the tunnel
//	addrs, err := h.LookupAAAA(ctx, "main.ws.me.coder")           // DNS through the tunnel
//	h.Stop(ctx)
//
// The OS half is a gVisor userspace stack (Netstack) on the Host's end of a
// packet socketpair that carries utun framing (a 4-byte address family
// header, macOS numbering). It is configured from the NetworkSettingsRequests
// the tunnel sends, each of which replaces the whole configuration as
// NEPacketTunnelProvider.setTunnelNetworkSettings does, and it honours the
// requested MTU (1500 when the request says 0, as on macOS). The stack itself
// is package internal/netstack, shared with the CLI's userspace demo; Netstack,
// NetConfig and the other names here are aliases of it.
//
// The manager half is a manager.Session, the same one the CLI uses. The
// Host applies its NetworkSettings requests to the stack (or refuses or
// ignores them, per Options), records every Log and PeerUpdate, and merges
// PeerUpdates into a PeerState that tests wait on. Every call returns once
// what the tunnel sent before its reply is recorded. Anything the tunnel
// sends that a manager would not expect is recorded as a violation
// (Violations) instead of failing the test from a goroutine.
package hosttest
