package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/dlhost"
)

// The tests run the real programs: the codervpn binary, and for the dylib
// path libcodervpn.so in the C host. They are built once per test run into
// a directory every user can read (the privilege test runs the binary as
// nobody), removed by TestMain.
var (
	buildDirOnce sync.Once
	buildDir     string
	buildDirErr  error

	binOnce sync.Once
	binPath string
	binErr  error

	libOnce             sync.Once
	libPath, dlhostPath string
	libErr              error

	netnsSeq atomic.Int32
)

func sharedBuildDir(t *testing.T) string {
	t.Helper()
	buildDirOnce.Do(func() {
		buildDir, buildDirErr = os.MkdirTemp("", "codervpn-cmd-test-")
		if buildDirErr == nil {
			buildDirErr = os.Chmod(buildDir, 0o755)
		}
	})
	if buildDirErr != nil {
		t.Fatalf("make the build directory: %v", buildDirErr)
	}
	return buildDir
}

func cleanupBuilds() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// codervpnBinary builds this command once.
func codervpnBinary(t *testing.T) string {
	t.Helper()
	dir := sharedBuildDir(t)
	binOnce.Do(func() {
		binPath = filepath.Join(dir, "codervpn")
		binErr = run1(t, "go", "build", "-o", binPath, ".")
	})
	if binErr != nil {
		t.Fatalf("build codervpn: %v", binErr)
	}
	return binPath
}

// dylibFiles builds libcodervpn.so and the C host once, as `make dylib
// dlhost` does. It is dlhost.Build, which cmd/dylib's tests use too: built
// with the same flags, the second build of a run finds every package
// compiled by the first.
func dylibFiles(t *testing.T) (lib, host string) {
	t.Helper()
	dir := sharedBuildDir(t)
	libOnce.Do(func() {
		if _, err := exec.LookPath("cc"); err != nil {
			libErr = err
			return
		}
		libPath, dlhostPath, libErr = dlhost.Build(dir, "v0.0.0-cmdtest")
	})
	if libErr != nil {
		t.Fatalf("build libcodervpn.so and dlhost (needs a C compiler): %v", libErr)
	}
	return libPath, dlhostPath
}

func run1(t *testing.T, name string, args ...string) error {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("%s %s:\n%s", name, strings.Join(args, " "), out)
	}
	return err
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) for network namespaces and TUN devices; run the tests as root")
	}
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install iproute2 curl)", tool)
		}
	}
}

// testNetns makes a named network namespace for one test and deletes it at
// cleanup.
func testNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("cvpn-test-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	return name
}

// jsonEvents decodes `up --json` lines into a channel, closed at EOF.
type jsonEvent struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Peers   []struct {
		Workspace string   `json:"workspace"`
		Agent     string   `json:"agent"`
		Addresses []string `json:"addresses"`
		State     string   `json:"state"`
	} `json:"peers"`
}

func decodeEvents(t *testing.T, r io.Reader) <-chan jsonEvent {
	ch := make(chan jsonEvent, 256)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev jsonEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = jsonEvent{Type: "unparsable", Message: sc.Text()}
			}
			ch <- ev
		}
	}()
	return ch
}

// waitEvent reads events until match accepts one, the stream ends, or ctx
// ends; it returns the events seen.
func waitEvent(ctx context.Context, t *testing.T, ch <-chan jsonEvent, what string, match func(jsonEvent) bool) []jsonEvent {
	t.Helper()
	var seen []jsonEvent
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("output ended before %s; events: %+v", what, seen)
			}
			seen = append(seen, ev)
			if match(ev) {
				return seen
			}
		case <-ctx.Done():
			t.Fatalf("no %s before the deadline; events: %+v", what, seen)
		}
	}
}

// exitCode waits for cmd with a deadline and returns its exit code.
func exitCode(t *testing.T, cmd *exec.Cmd, d time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("wait for %s: %v", cmd.Path, err)
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not exit within %s", cmd.Path, d)
	}
	return -1
}

// startPiped starts cmd with its stdout on a pipe for the test to read and
// its stderr collected; read stderr only once cmd has exited.
func startPiped(t *testing.T, cmd *exec.Cmd) (io.ReadCloser, *bytes.Buffer) {
	t.Helper()
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return stdout, stderr
}
