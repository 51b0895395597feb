//go:build !linux

package tunfd

import (
	"os"
	"testing"
)

// openFds counts this process's open file descriptors.
func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/dev/fd")
	if err != nil {
		t.Fatalf("list /dev/fd: %v", err)
	}
	return len(ents)
}
