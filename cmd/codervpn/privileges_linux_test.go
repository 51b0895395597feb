package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUpWithoutPrivileges runs `up` as a user who may not create a TUN (as
// nobody when the test runs as root): it must fail at once with one line
// that says what to do, before contacting anything.
func TestUpWithoutPrivileges(t *testing.T) {
	bin := codervpnBinary(t)
	cmd := exec.Command(bin, "up", "--url", "http://127.0.0.1:1", "--token", "t0ken", "--tun-name", "cvpnpriv0")
	if os.Geteuid() == 0 {
		// nobody, with no capabilities: what an ordinary user is.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd, time.Minute); code != exitError {
		t.Fatalf("exit code %d, want %d; stderr: %s", code, exitError, stderr.String())
	}
	line := strings.TrimSpace(stderr.String())
	for _, want := range []string{"codervpn up: ", "cvpnpriv0", "run as root, or grant the capability with `sudo setcap cap_net_admin+ep "} {
		if !strings.Contains(line, want) || strings.Contains(line, "\n") {
			t.Fatalf("stderr %q, want one line containing %q", line, want)
		}
	}
}
