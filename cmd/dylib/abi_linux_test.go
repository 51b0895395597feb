package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/internal/abi"
)

// The generated header compiles on its own (with only <stdint.h> before
// it), declares the three functions with the documented types, and defines
// every code with the value the library returns.
func TestHeader(t *testing.T) {
	var src strings.Builder
	src.WriteString("#include <stdint.h>\n#include \"codervpn.h\"\n")
	for _, c := range abi.Codes {
		fmt.Fprintf(&src, "_Static_assert(%s == %d, \"%s\");\n", c.Name, c.Value, c.Name)
	}
	fmt.Fprintf(&src, "_Static_assert(CODERVPN_MAX_TUNNELS == %d, \"CODERVPN_MAX_TUNNELS\");\n", abi.MaxTunnels)
	src.WriteString(`
int32_t (*start_fn)(int32_t, int32_t, int32_t) = coderStartVPN;
int32_t (*stop_fn)(int32_t) = coderStopVPN;
const char *(*version_fn)(void) = coderVPNVersion;
`)
	file := filepath.Join(t.TempDir(), "header_check.c")
	if err := os.WriteFile(file, []byte(src.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	for _, std := range []string{"c11", "c17"} {
		cmd := exec.Command(cc, "-std="+std, "-Wall", "-Wextra", "-Werror", "-pedantic-errors",
			"-Wno-overlength-strings", "-I", buildDir, "-fsyntax-only", file)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("the header does not compile with -std=%s: %v\n%s", std, err, out)
		}
	}
}

func TestVersion(t *testing.T) {
	host := startDLHost(t)
	if got := host.call("version"); got != testVersion {
		t.Fatalf("coderVPNVersion() = %q, want %q (the -X stamp)", got, testVersion)
	}
}

// Bad arguments get the documented code and change nothing; calls from many
// threads at once do not crash the host.
func TestBadCalls(t *testing.T) {
	host := startDLHost(t)
	base := host.warm()
	rd, wr := pipeFiles(t)
	// A number far above anything open in the host.
	const closed = 1 << 20

	cases := []struct {
		name string
		tun  any
		read any
		wrt  any
		want int32
	}{
		{"negative read fd", -1, -5, wr, abi.CodeBadReadFD},
		{"closed read fd", -1, closed, wr, abi.CodeBadReadFD},
		{"read fd is a write end", -1, wr, wr, abi.CodeBadReadFD},
		{"negative write fd", -1, rd, -2, abi.CodeBadWriteFD},
		{"closed write fd", -1, rd, closed, abi.CodeBadWriteFD},
		{"write fd is a read end", -1, rd, rd, abi.CodeBadWriteFD},
		{"tun fd -2", -2, rd, wr, abi.CodeBadTunFD},
		{"closed tun fd", closed, rd, wr, abi.CodeBadTunFD},
		{"read-only tun fd", rd, rd, wr, abi.CodeBadTunFD},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := host.start(tc.tun, tc.read, tc.wrt); got != tc.want {
				t.Fatalf("coderStartVPN = %d, want %d", got, tc.want)
			}
		})
	}
	for _, h := range []string{"-1", "0", "12345", "2147483647"} {
		if got := host.call("stop " + h); got != strconv.Itoa(int(abi.CodeUnknownHandle)) {
			t.Errorf("coderStopVPN(%s) = %s, want %d", h, got, abi.CodeUnknownHandle)
		}
	}
	// 16 threads, each 500 rounds of bad starts, unknown stops and versions.
	host.call("threads 16 500")
	host.waitFDs(base, "after bad calls")
	if got := host.call("version"); got != testVersion {
		t.Fatalf("version after the storm = %q", got)
	}
}

// Eight tunnels may wait for their managers at once; a ninth is refused,
// stopping them (mid-handshake) frees the slots and every fd.
func TestTooManyTunnels(t *testing.T) {
	host := startDLHost(t)
	base := host.warm()
	var handles []int32
	for range abi.MaxTunnels {
		rd, wr := pipeFiles(t)
		h := host.start(socketFile(t), rd, wr)
		if h < 0 {
			t.Fatalf("coderStartVPN = %d", h)
		}
		handles = append(handles, h)
	}
	rd, wr := pipeFiles(t)
	if got := host.start(-1, rd, wr); got != abi.CodeTooManyTunnels {
		t.Fatalf("ninth coderStartVPN = %d, want %d", got, abi.CodeTooManyTunnels)
	}
	for _, h := range handles {
		if rc := host.stop(h); rc != 0 {
			t.Fatalf("coderStopVPN(%d) = %d", h, rc)
		}
	}
	host.waitFDs(base, "after stopping every tunnel")
	h := host.start(-1, rd, wr)
	if h < 0 {
		t.Fatalf("coderStartVPN after freeing the slots = %d", h)
	}
	if rc := host.stop(h); rc != 0 {
		t.Fatalf("coderStopVPN = %d", rc)
	}
	host.waitFDs(base, "after a start and stop")
}

func pipeFiles(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// socketFile is one end of a datagram socketpair, usable as a tun fd.
func socketFile(t *testing.T) *os.File {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "tun"), os.NewFile(uintptr(fds[1]), "tun-peer")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a
}
