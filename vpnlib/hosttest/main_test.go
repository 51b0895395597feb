package hosttest

import (
	"fmt"
	"os"
	"sort"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fdSnapshot maps this process's open fds to what they point at.
type fdSnapshot map[string]string

func openFDs(t testing.TB) fdSnapshot {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count fds without /proc: %v", err)
	}
	s := fdSnapshot{}
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil { // the directory's own fd is gone by now
			s[e.Name()] = target
		}
	}
	return s
}

// diff lists fds opened or closed since before; empty means none.
func (s fdSnapshot) diff(before fdSnapshot) string {
	var out []string
	for fd, target := range s {
		if before[fd] != target {
			out = append(out, fmt.Sprintf("+%s:%s", fd, target))
		}
	}
	for fd, target := range before {
		if s[fd] != target {
			out = append(out, fmt.Sprintf("-%s:%s", fd, target))
		}
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}
