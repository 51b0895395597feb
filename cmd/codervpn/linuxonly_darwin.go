package main

import (
	"fmt"
	"io"
)

// On macOS this binary is Coder Desktop's tunnel process (`vpn-daemon run`,
// `daemon`); the commands that create and configure a network device
// themselves are Linux-only, because on macOS that is the NetworkExtension's
// job.

func cmdUp(_ []string, _ func(string) string, _, stderr io.Writer) int {
	return linuxOnly("up", stderr)
}

func cmdDemo(_ []string, _ func(string) string, _, stderr io.Writer) int {
	return linuxOnly("demo", stderr)
}

func linuxOnly(cmd string, stderr io.Writer) int {
	fmt.Fprintf(stderr, "codervpn %s runs on Linux only: on macOS the NetworkExtension owns the utun device "+
		"and runs the tunnel as 'codervpn vpn-daemon run' (as Coder Desktop does) or loads libcodervpn.dylib\n", cmd)
	return exitError
}

func cmdStatus(_ []string, _ func(string) string, _, stderr io.Writer) int {
	return linuxOnly("status", stderr)
}

func cmdDown(_ []string, _ func(string) string, _, stderr io.Writer) int {
	return linuxOnly("down", stderr)
}

func cmdService(_ []string, _ func(string) string, _, stderr io.Writer) int {
	return linuxOnly("service", stderr)
}
