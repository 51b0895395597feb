package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/internal/abi"
	"github.com/codervpn/codervpn/internal/hostlog"
)

// The shipped header compiles on its own (nothing before it) as strict C,
// defines every code and constant with the value the library uses, and
// declares each function with the documented type, both as a prototype and
// as a *_fn type; with CODERVPN_NO_PROTOTYPES it declares no function.
func TestHeader(t *testing.T) {
	var src strings.Builder
	src.WriteString("#include \"codervpn.h\"\n")
	for _, c := range abi.Codes {
		fmt.Fprintf(&src, "_Static_assert(%s == %d, \"%s\");\n", c.Name, c.Value, c.Name)
	}
	for name, v := range map[string]int64{
		"CODERVPN_MAX_TUNNELS":          abi.MaxTunnels,
		"CODERVPN_MEMORY_LIMIT_DEFAULT": -1,
		"CODERVPN_MEMORY_LIMIT_OFF":     abi.MemoryLimitOff,
		"CODERVPN_MEMORY_LIMIT_MIN":     abi.MinMemoryLimit,
		"CODERVPN_LOG_DEBUG":            int64(hostlog.LevelDebug),
		"CODERVPN_LOG_INFO":             int64(hostlog.LevelInfo),
		"CODERVPN_LOG_WARN":             int64(hostlog.LevelWarn),
		"CODERVPN_LOG_ERROR":            int64(hostlog.LevelError),
		"CODERVPN_LOG_CRITICAL":         int64(hostlog.LevelCritical),
		"CODERVPN_LOG_FATAL":            int64(hostlog.LevelFatal),
	} {
		fmt.Fprintf(&src, "_Static_assert(%s == %dLL, \"%s\");\n", name, v, name)
	}
	src.WriteString(headerFunctionTypes)
	src.WriteString(`
coderStartVPN_fn start_p = coderStartVPN;
coderStopVPN_fn stop_p = coderStopVPN;
coderVPNVersion_fn version_p = coderVPNVersion;
coderSetMemoryLimit_fn memlimit_p = coderSetMemoryLimit;
coderSetLogger_fn logger_p = coderSetLogger;
coderSetCrashOutput_fn crash_p = coderSetCrashOutput;
`)
	dir := t.TempDir()
	file := filepath.Join(dir, "header_check.c")
	writeFile(t, file, src.String())
	// A dlopen host: the types and constants, and no function declared (the
	// names are free for its own variables).
	noProto := filepath.Join(dir, "no_prototypes.c")
	writeFile(t, noProto, "#define CODERVPN_NO_PROTOTYPES\n#include \"codervpn.h\"\n"+
		"int coderStartVPN, coderStopVPN, coderVPNVersion, coderSetMemoryLimit, coderSetLogger, coderSetCrashOutput;\n"+
		"coderStartVPN_fn start_p;\ncoderSetLogger_fn logger_p;\n")
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	for _, c := range []struct{ std, file string }{
		{"c99", noProto}, {"c11", noProto}, {"c11", file}, {"c17", file}, // _Static_assert is C11
	} {
		args := []string{"-std=" + c.std, "-Wall", "-Wextra", "-Werror", "-pedantic-errors", "-I", headerDir, "-fsyntax-only", c.file}
		if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
			t.Fatalf("the header does not compile with %s -std=%s (%s): %v\n%s", cc, c.std, filepath.Base(c.file), err, out)
		}
	}
}

// headerDir holds the header that ships: this package's.
const headerDir = "."

// The shipped header and the one cgo generates from the exports compile
// together in C, Objective-C, C++ and Objective-C++ with clang (the
// compiler of a Swift host), warnings as errors: a prototype that differs
// from its export in any type fails. (The library's own build already
// checks each export against the prototype, since the cgo preamble
// includes the header; this is the view from a host's compiler, with
// nullability on.) Each language also compiles the shipped header alone
// with -pedantic and -Wnullability-completeness. Without clang this fails:
// .ci/run installs it.
func TestHeaderWithClang(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Fatal("clang is missing: apt-get install clang (.ci/run installs it); this test must run in CI")
	}
	dir := t.TempDir()
	alone := filepath.Join(dir, "alone.c")
	writeFile(t, alone, "#include \"codervpn.h\"\n"+headerFunctionTypes)
	both := filepath.Join(dir, "both.c")
	writeFile(t, both, "#include \"codervpn.h\"\n#include \"libcodervpn.h\"\n"+headerFunctionTypes)
	for _, lang := range []struct{ name, std string }{
		{"c", "-std=c11"}, {"objective-c", ""}, {"c++", "-std=c++11"}, {"objective-c++", ""},
	} {
		t.Run(lang.name, func(t *testing.T) {
			base := []string{"-x", lang.name, "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-pedantic",
				"-Wnullability-completeness", "-I", headerDir, "-I", buildDir}
			if lang.std != "" {
				base = append(base, lang.std)
			}
			if out, err := exec.Command(clang, append(base, alone)...).CombinedOutput(); err != nil {
				t.Fatalf("codervpn.h alone: %v\n%s", err, out)
			}
			// cgo's header declares complex types, a C99 feature that
			// -pedantic flags in C++: its business, not ours.
			if strings.HasSuffix(lang.name, "++") {
				base = append(base, "-Wno-c99-extensions")
			}
			if out, err := exec.Command(clang, append(base, both)...).CombinedOutput(); err != nil {
				t.Fatalf("codervpn.h with cgo's libcodervpn.h: %v\n%s", err, out)
			}
		})
	}
}

// Every function the library exports has a prototype and a *_fn type in the
// shipped header, and the header declares nothing the library lacks.
func TestHeaderDeclaresEveryExport(t *testing.T) {
	generated, err := os.ReadFile(filepath.Join(buildDir, "libcodervpn.h"))
	if err != nil {
		t.Fatal(err)
	}
	header, err := os.ReadFile(filepath.Join(headerDir, "codervpn.h"))
	if err != nil {
		t.Fatal(err)
	}
	names := func(re string, src []byte) []string {
		var out []string
		for _, m := range regexp.MustCompile(re).FindAllSubmatch(src, -1) {
			out = append(out, string(m[1]))
		}
		slices.Sort(out)
		return out
	}
	exports := names(`(?m)^extern [^(]*\b(coder\w+)\(`, generated)
	prototypes := names(`(?m)^(?:int32_t |int64_t |const char \*)(coder\w+)\(`, header)
	types := names(`(?m)^typedef [^(]*\(\*(coder\w+)_fn\)\(`, header)
	if len(exports) == 0 || !slices.Equal(exports, prototypes) || !slices.Equal(exports, types) {
		t.Fatalf("the library exports %v; codervpn.h has prototypes for %v and *_fn types for %v", exports, prototypes, types)
	}
}

// headerFunctionTypes has the compiler check every prototype against the
// type the README documents.
const headerFunctionTypes = `
int32_t (*start_t)(int32_t, int32_t, int32_t) = coderStartVPN;
int32_t (*stop_t)(int32_t) = coderStopVPN;
const char *(*version_t)(void) = coderVPNVersion;
int64_t (*memlimit_t)(int64_t) = coderSetMemoryLimit;
int32_t (*logger_t)(void *, void (*)(void *, int32_t, const char *), int32_t) = coderSetLogger;
int32_t (*crash_t)(int32_t) = coderSetCrashOutput;
`

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
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
