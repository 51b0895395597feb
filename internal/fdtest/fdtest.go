// Package fdtest finds the file descriptors a test left open. It compares
// the process's fds before and after by number and by what each refers to,
// and only those of the kinds the code under test opens: a count of every
// fd in the process also moves when the runtime or another goroutine opens
// or closes one, and a leak check built on it fails, or passes, for
// reasons that have nothing to do with the code it checks.
package fdtest

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Snapshot is the process's open fds, by number, with what each refers to
// (the /proc/self/fd link: "pipe:[123]", "socket:[456]", "/dev/net/tun").
// Where there is no /proc (macOS), targets are empty and fds compare by
// number alone.
type Snapshot map[int]string

// Kind says whether an fd is of a kind the code under test opens.
type Kind func(fd int, target string) bool

// Take returns the open fds of the process.
func Take(t testing.TB) Snapshot {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	withTargets := err == nil
	if err != nil {
		if ents, err = os.ReadDir("/dev/fd"); err != nil {
			t.Fatalf("list the open fds: %v", err)
		}
	}
	s := Snapshot{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var target string
		if withTargets {
			if target, err = os.Readlink("/proc/self/fd/" + e.Name()); err != nil {
				continue // closed meanwhile: the listing's own fd, for one
			}
		}
		s[fd] = target
	}
	return s
}

// Opened lists, sorted, the fds of kind open now that were not open, or
// referred to something else, in s.
func (s Snapshot) Opened(t testing.TB, kind Kind) []string {
	t.Helper()
	var out []string
	for fd, target := range Take(t) {
		if old, ok := s[fd]; ok && old == target {
			continue
		}
		if kind == nil || kind(fd, target) {
			out = append(out, strconv.Itoa(fd)+" -> "+target)
		}
	}
	slices.Sort(out)
	return out
}

// Check fails t, naming them, if fds of kind were opened since s.
func (s Snapshot) Check(t testing.TB, kind Kind, who string) {
	t.Helper()
	if left := s.Opened(t, kind); len(left) > 0 {
		t.Errorf("fds left open by %s: %s", who, strings.Join(left, ", "))
	}
}

// WaitClosed is Check for code that closes some fds after it returns (a
// read blocked on an fd being closed releases it when it returns, a server
// hangs up on its own time): it waits up to d for them to go.
func (s Snapshot) WaitClosed(t testing.TB, kind Kind, d time.Duration, who string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := s.Opened(t, kind)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("fds left open by %s after %s: %s", who, d, strings.Join(left, ", "))
			return
		}
		time.Sleep(20 * time.Millisecond) // polling /proc: nothing announces a close
	}
}

// Pipes are pipe ends.
func Pipes(_ int, target string) bool { return strings.HasPrefix(target, "pipe:") }

// Sockets are sockets of any family.
func Sockets(_ int, target string) bool { return strings.HasPrefix(target, "socket:") }

// Any is the union of kinds.
func Any(kinds ...Kind) Kind {
	return func(fd int, target string) bool {
		for _, k := range kinds {
			if k(fd, target) {
				return true
			}
		}
		return false
	}
}

// Target is the fds referring to what fd refers to now (its dups, for
// one).
func Target(t testing.TB, fd int) Kind {
	t.Helper()
	want := Take(t)[fd]
	return func(_ int, target string) bool { return target == want }
}
