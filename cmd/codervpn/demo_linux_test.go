package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs `codervpn demo` as `make demo` does and checks its report:
// the agent's page fetched by DNS name, the timeline, the status table and
// the throughput, and that nothing is left behind.
func TestDemo(t *testing.T) {
	tests := []struct {
		name  string
		root  bool
		args  []string
		wants []string
	}{
		{
			name: "kernel path", root: true,
			wants: []string{
				"running as root: the kernel path",
				"GET http://main.dev.me.coder/ with curl inside network namespace " + demoNetnsPrefix,
			},
		},
		{
			// Runs without root too; as root it is forced with --userspace.
			name: "userspace path", args: []string{"--userspace", "--bytes", fmt.Sprint(16 << 20)},
			wants: []string{"USERSPACE PATH", "with Go's HTTP client over the userspace TCP/IP stack", "throughput: 16 MiB in "},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				requireRoot(t)
				requireTools(t, "ip", "curl")
			}
			bin := codervpnBinary(t)
			lib, host := dylibFiles(t)
			cmd := exec.Command(bin, append([]string{"demo", "--lib", lib, "--dlhost", host}, tc.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := cmd.Process.Pid
			code := exitCode(t, cmd, 5*time.Minute)
			out := stdout.String()
			if code != 0 {
				t.Fatalf("demo exit code %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr.String())
			}
			wants := append([]string{
				`the agent answered: "hello from agent main (id `,
				"main.dev.me.coder resolved by the tunnel's DNS to fd60:627a:a42b:",
				"throughput: ",
				"WORKSPACE  AGENT    NAME",
				"demo OK",
			}, tc.wants...)
			for _, m := range []string{milestoneDeployment, milestoneLibrary, milestoneHandshake, milestoneSettings,
				milestoneStarted, milestonePeers, milestoneFirstByte, milestoneTransfer, milestoneStopResponse, milestoneStopped} {
				wants = append(wants, "  "+m+" ")
			}
			for _, w := range wants {
				if !strings.Contains(out, w) {
					t.Errorf("the demo's output lacks %q", w)
				}
			}
			if t.Failed() {
				t.Fatalf("stdout:\n%s\nstderr:\n%s", out, stderr.String())
			}
			t.Logf("demo output:\n%s", out)
			checkNothingLeft(t, pid, lib)
		})
	}
}

// TestDemoInterrupted sends SIGINT to the demo in the middle of its run: it
// must remove its namespace, resolver files and processes, and exit 130.
func TestDemoInterrupted(t *testing.T) {
	requireRoot(t)
	requireTools(t, "ip", "curl")
	bin := codervpnBinary(t)
	lib, host := dylibFiles(t)
	cmd := exec.Command(bin, "demo", "--lib", lib, "--dlhost", host)
	stdout, stderr := startPiped(t, cmd)
	pid := cmd.Process.Pid
	// Interrupt once the tunnel is up and curl is running in the namespace.
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var seen []string
	for found := false; !found; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the demo ended before fetching; output:\n%s\n%s", strings.Join(seen, "\n"), stderr.String())
			}
			seen = append(seen, l)
			found = strings.Contains(l, "GET http://main.dev.me.coder/bytes")
		case <-ctx.Done():
			t.Fatalf("the demo did not start fetching; output:\n%s", strings.Join(seen, "\n"))
		}
	}
	if _, err := os.Stat(filepath.Join(netnsRunDir, fmt.Sprintf("%s%d", demoNetnsPrefix, pid))); err != nil {
		t.Fatalf("the demo's namespace is not there while it runs: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range lines { // drain until the demo closes stdout
	}
	if code := exitCode(t, cmd, 2*time.Minute); code != exitInterrupted {
		t.Fatalf("exit code %d after SIGINT, want %d\n%s", code, exitInterrupted, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted; everything it made was removed") {
		t.Fatalf("stderr: %s", stderr.String())
	}
	checkNothingLeft(t, pid, lib)
}

// checkNothingLeft asserts that the demo with this pid left no namespace,
// no /etc/netns directory and no process that loaded lib.
func checkNothingLeft(t *testing.T, pid int, lib string) {
	t.Helper()
	name := fmt.Sprintf("%s%d", demoNetnsPrefix, pid)
	for _, p := range []string{filepath.Join(netnsRunDir, name), filepath.Join(netnsEtcDir, name)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was left behind", p)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(lib)) {
			t.Errorf("a process still runs with %s: %s (%q)", lib, p, b)
		}
	}
}
