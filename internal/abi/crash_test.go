package abi

import (
	"testing"
)

// Bad fds are refused and change nothing; a write end and -1 are taken.
// (cmd/dylib's TestCrashOutput crashes a C host and reads the trace.)
func TestSetCrashOutputArguments(t *testing.T) {
	checkNoFDLeak(t)
	r, w := pipe(t)
	closed, _ := pipe(t)
	closedFD := int(closed.Fd())
	closed.Close()
	cases := []struct {
		name string
		fd   int
		want int32
	}{
		{"-2", -2, CodeBadCrashFD},
		{"closed", closedFD, CodeBadCrashFD},
		{"read end", int(r.Fd()), CodeBadCrashFD},
		{"absurd", 1 << 30, CodeBadCrashFD},
		{"write end", int(w.Fd()), 0},
		{"off", -1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := SetCrashOutput(tc.fd); got != tc.want {
				t.Fatalf("SetCrashOutput(%d) = %d, want %d", tc.fd, got, tc.want)
			}
		})
	}
}
