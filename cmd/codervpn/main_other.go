//go:build !linux

package main

import (
	"fmt"
	"io"
	"runtime"
)

// run explains that this command is for Linux. On macOS the same tunnel
// core ships as libcodervpn.dylib for the NetworkExtension (see README.md).
func run(_ []string, _ func(string) string, _, stderr io.Writer) int {
	fmt.Fprintf(stderr, "codervpn runs on Linux only (this is %s); on macOS, load libcodervpn.dylib from a NetworkExtension\n", runtime.GOOS)
	return exitError
}
