//go:build !linux && !darwin

package main

import (
	"fmt"
	"io"
	"runtime"
)

// run explains that this command is for Linux and macOS.
func run(_ []string, _ func(string) string, _, stderr io.Writer) int {
	fmt.Fprintf(stderr, "codervpn runs on Linux and macOS only (this is %s)\n", runtime.GOOS)
	return exitError
}
