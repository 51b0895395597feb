package dlhost

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Build compiles libcodervpn.so and the C host into dir, with version
// stamped into the library and the given build tags (the tests' exports:
// codervpn_testexports), and returns their paths. dir also gets the header
// that ships, codervpn.h (cmd/dylib's, as `make dylib` copies it), and the
// one cgo generated, libcodervpn.h, which the tests compile against it. It
// runs the go command and $CC (cc by default) from the module root, so it
// works from any package's tests.
//
// The flags are `make dylib`'s, and one Build runs at a time on the machine:
// a c-shared build compiles the whole dependency tree apart from every other
// build mode (~400 s on a busy 2-core machine with a cold cache), and `go
// test ./...` runs the test binaries of cmd/dylib and cmd/codervpn side by
// side. Taking turns, the second finds every package in the build cache and
// only links.
func Build(dir, version string, tags ...string) (lib, host string, err error) {
	root, err := moduleRoot()
	if err != nil {
		return "", "", err
	}
	unlock, err := lockBuilds()
	if err != nil {
		return "", "", err
	}
	defer unlock()
	lib, host = filepath.Join(dir, "libcodervpn.so"), filepath.Join(dir, "dlhost")
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	steps := [][]string{
		{"go", "build", "-buildmode=c-shared", "-trimpath", "-tags", strings.Join(tags, ","),
			"-ldflags", "-s -w -X github.com/codervpn/codervpn/internal/buildinfo.Version=" + version,
			"-o", lib, "./cmd/dylib"},
		{cc, "-Wall", "-Wextra", "-Werror", "-O2", "-I", "cmd/dylib", "-o", host, "scripts/dlhost.c", "-ldl", "-lpthread"},
		{"cp", "cmd/dylib/codervpn.h", filepath.Join(dir, "codervpn.h")},
	}
	for _, s := range steps {
		cmd := exec.Command(s[0], s[1:]...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("%s: %w\n%s", strings.Join(s, " "), err, out)
		}
	}
	return lib, host, nil
}

// moduleRoot is the directory of the go.mod the go command finds from here.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the codervpn module")
	}
	return filepath.Dir(gomod), nil
}

// lockBuilds waits for, and takes, the machine-wide lock Build holds while
// it builds.
func lockBuilds() (unlock func(), err error) {
	path := filepath.Join(os.TempDir(), "codervpn-dlhost-build.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("open the build lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("take the build lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}
