//go:build !linux

package main

// cleanupBuilds has nothing to remove where the binary tests do not run.
func cleanupBuilds() {}
