// Command codervpn is the Linux host of the CoderVPN tunnel core: it puts a
// Coder user's workspaces on this machine's network. On macOS it is the
// tunnel process Coder Desktop spawns (`vpn-daemon run`).
//
//	codervpn up              create a TUN, run the tunnel, apply its settings, show status (Linux)
//	codervpn daemon          the tunnel core alone, on fds inherited from a manager
//	codervpn vpn-daemon run  the same under Coder Desktop's command line
//	codervpn demo            an embedded deployment and a real tunnel, end to end (Linux)
//	codervpn version         print the version
//
// `up` plays the part the macOS NetworkExtension plays for libcodervpn: it
// is the manager of the CoderVPN protocol. The tunnel core can run in this
// process, in a `codervpn daemon` child, or in libcodervpn.so loaded by the
// C host, and the manager cannot tell the difference: that is the point of
// the protocol, and the reason the three backends exist (the last two prove
// the contracts Coder Desktop and the NetworkExtension rely on).
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
