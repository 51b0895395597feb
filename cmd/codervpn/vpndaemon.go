//go:build linux || darwin

package main

import (
	"fmt"
	"io"
)

const vpnDaemonUsage = `Usage: codervpn vpn-daemon run --rpc-read-fd R --rpc-write-fd W

The command line Coder Desktop runs its tunnel process with (it runs
'coder vpn-daemon run'): the tunnel core on the pipe fds it inherited, the
TUN's fd taken from StartRequest.tunnel_file_descriptor. The same as
'codervpn daemon'; run 'codervpn vpn-daemon run --help' for the flags.
`

// cmdVPNDaemon is `codervpn vpn-daemon`, whose one subcommand `run` is
// `codervpn daemon` under the name Coder Desktop spawns, so that this
// binary can stand in for the coder CLI as Coder Desktop's tunnel process.
func cmdVPNDaemon(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, vpnDaemonUsage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return runDaemonCommand(vpnDaemonRunCmd, args[1:], getenv, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, vpnDaemonUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "codervpn vpn-daemon: unknown subcommand %q\n\n%s", args[0], vpnDaemonUsage)
	return exitUsage
}
