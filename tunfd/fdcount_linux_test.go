package tunfd

import (
	"os"
	"testing"
)

// openFds counts this process's open file descriptors.
func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list /proc/self/fd: %v", err)
	}
	return len(ents)
}
