package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/abi"
	"github.com/codervpn/codervpn/internal/dlhost"
)

// An unrecovered panic in a goroutine of the library ends the host process
// (the tunnel's state is unknown: that is Go's rule, and the right one), and
// its trace lands in the file the host named with coderSetCrashOutput, which
// it had closed right after the call, as well as on stderr.
func TestCrashOutput(t *testing.T) {
	lib := testExportsLib(t)
	out := &syncBuffer{}
	h, err := dlhost.Start(hostPath, lib, nil, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Kill)

	path := filepath.Join(t.TempDir(), "crash.txt")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	readOnly, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer readOnly.Close()
	cases := []struct {
		name string
		fd   any
		want int32
	}{
		{"fd -2", -2, abi.CodeBadCrashFD},
		{"closed fd", 1 << 20, abi.CodeBadCrashFD},
		{"read-only file", readOnly, abi.CodeBadCrashFD},
		{"off", -1, 0},
		{"the crash file", f, 0},
	}
	for _, tc := range cases {
		if rc, err := h.SetCrashOutput(tc.fd); err != nil || rc != tc.want {
			t.Fatalf("coderSetCrashOutput(%s) = %d, %v; want %d", tc.name, rc, err, tc.want)
		}
	}

	h.TestCrash()
	select {
	case <-h.Exited():
	case <-time.After(testTimeout):
		t.Fatal("the C host outlived a panic in the library")
	}
	if h.ExitError() == nil {
		t.Fatal("the C host exited cleanly after a panic in the library")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	trace := string(b)
	for _, want := range []string{
		"panic: codervpn test crash: an unrecovered panic in a library goroutine",
		"goroutine ",
		"main.coderTestCrash.func1()",
	} {
		if !strings.Contains(trace, want) {
			t.Errorf("the crash file lacks %q; it holds:\n%s", want, trace)
		}
	}
	if !strings.Contains(out.String(), "panic: codervpn test crash") {
		t.Errorf("stderr lacks the panic; the host wrote:\n%s", out)
	}
	t.Logf("%s: %d bytes; the host ended with %v", filepath.Base(path), len(b), h.ExitError())
}
