// Package netstack is the operating system's network stack behind a utun
// device, in userspace: a gVisor TCP/IP stack whose only interface is one end
// of a packet socketpair (or any fd) carrying utun framing, a 4-byte address
// family header with macOS's numbers in front of each IP packet. The tunnel
// gets the other end as its tun fd and cannot tell the difference.
//
// It is configured from the tunnel's NetworkSettingsRequests (ParseSettings,
// Stack.Apply), each of which replaces the whole configuration, as
// NEPacketTunnelProvider.setTunnelNetworkSettings does on a Mac, and programs
// use it through DialTCP, ListenTCP, DialUDP, ListenUDP and LookupAAAA.
//
// It serves three callers that must not need root, a TUN or a Mac: the test
// host (vpnlib/hosttest), the demo's userspace path (cmd/codervpn), and the
// benchmarks. It lives here rather than in hosttest so that the CLI can use
// it without importing package testing.
package netstack
