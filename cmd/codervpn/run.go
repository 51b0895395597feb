//go:build linux || darwin

package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/codervpn/codervpn/internal/buildinfo"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// run dispatches to a subcommand and returns the exit code.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return exitUsage
	}
	switch args[0] {
	case "up":
		return cmdUp(args[1:], getenv, stdout, stderr)
	case "status":
		return cmdStatus(args[1:], getenv, stdout, stderr)
	case "down":
		return cmdDown(args[1:], getenv, stdout, stderr)
	case "service":
		return cmdService(args[1:], getenv, stdout, stderr)
	case "daemon":
		return cmdDaemon(args[1:], getenv, stdout, stderr)
	case "vpn-daemon":
		return cmdVPNDaemon(args[1:], getenv, stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], getenv, stdout, stderr)
	case "version", "--version", "-version":
		printVersion(stdout)
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, mainUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "codervpn: unknown command %q\n\n%s", args[0], mainUsage)
	return exitUsage
}

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "codervpn %s (CoderVPN protocol %s, %s, %s/%s)\n",
		buildinfo.Version, speaker.CurrentVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
