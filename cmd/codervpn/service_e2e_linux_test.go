package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/dbustest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// TestServiceEndToEnd: the service runs as root with its TUN in a private
// namespace; an unprivileged member of its group brings the tunnel up with
// the login `coder login` left, curls an agent by name through it, reads
// the status, and brings it down; an outsider is refused by the socket's
// mode and, with the mode opened, by the peer check; SIGTERM exits 0.
func TestServiceEndToEnd(t *testing.T) {
	began := time.Now()
	step := func(what string) { t.Logf("%6.2fs %s", time.Since(began).Seconds(), what) }
	r := newServiceRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := vpntest.New(t, vpntest.Options{})
	if _, err := d.AddRunningAgent(ctx, "dev", "main"); err != nil {
		t.Fatal(err)
	}
	step("deployment and agent ready")
	r.bus = dbustest.Start(t)
	r.start(t)
	cfgDir := coderConfig(t, r.member, d)

	stdout, stderr, code := r.client(t, r.member, []string{"CODER_CONFIG_DIR=" + cfgDir}, "up")
	if code != 0 || !strings.Contains(stdout, "connected in") || !strings.Contains(stdout, "main") {
		t.Fatalf("up as %s: exit %d\nstdout:\n%s\nstderr:\n%s\nservice:\n%s", r.member.Username, code, stdout, stderr, r.stderr)
	}
	for _, line := range strings.Split(stdout, "\n") {
		if strings.Contains(line, "connected in") {
			t.Logf("up as a group member: %s", strings.TrimSpace(line))
		}
	}
	if strings.Contains(stdout+stderr, d.Token) {
		t.Fatal("up printed the token")
	}
	checkTunConfigured(t, r.ns)
	curlByName(t, r.ns, "main.dev.me.coder")

	// Resume from sleep: logind's PrepareForSleep(false) on the (private)
	// system bus reaches the tunnel as a WakeRequest, which rebinds.
	bus := dbustest.Connect(t, r.bus)
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(r.stderr.String(), "system wake: rebound sockets") {
		if time.Now().After(deadline) {
			t.Fatalf("no rebind after PrepareForSleep(false); service:\n%s", r.stderr)
		}
		// Emitted until seen: the service subscribes once it runs.
		if err := bus.Emit("/org/freedesktop/login1", "org.freedesktop.login1.Manager.PrepareForSleep", false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	step("rebound after resume")
	curlByName(t, r.ns, "main.dev.me.coder")

	st := r.status(t, r.member)
	if st.Lifecycle != "started" || len(st.Peers) != 1 || st.Peers[0].Agent != "main" {
		t.Fatalf("status --json = %+v", st)
	}

	// An outsider: the socket's mode refuses it, and so does the peer check
	// when the mode is opened.
	_, stderr, code = r.client(t, r.outsider, nil, "status")
	if code != 1 || !strings.Contains(stderr, "permission denied on "+r.sock) ||
		!strings.Contains(stderr, "not in group "+r.group) || !strings.Contains(stderr, "usermod -aG "+r.group) {
		t.Fatalf("outsider through 0660: exit %d, stderr %q", code, stderr)
	}
	if err := os.Chmod(r.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = r.client(t, r.outsider, nil, "status")
	want := "the codervpn service refused: user " + r.outsider.Username + " is not in group " + r.group
	if code != 1 || !strings.Contains(stderr, want) || strings.Contains(stderr, "broken pipe") {
		t.Fatalf("outsider through 0666: exit %d, stderr %q, want %q", code, stderr, want)
	}
	if err := os.Chmod(r.sock, 0o660); err != nil {
		t.Fatal(err)
	}
	step("outsiders refused")

	stdout, stderr, code = r.client(t, r.member, nil, "down")
	if code != 0 {
		t.Fatalf("down: exit %d: %s %s", code, stdout, stderr)
	}
	if v := readKernelView(t, r.ns, "coder0"); v.exists {
		t.Fatalf("after down coder0 still exists: %+v", v)
	}
	if st := r.status(t, r.member); st.Lifecycle != "stopped" {
		t.Fatalf("status after down: %+v", st)
	}
	if code := r.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("service exit %d after SIGTERM; stderr:\n%s", code, r.stderr)
	}
	if _, err := os.Stat(r.sock); !os.IsNotExist(err) {
		t.Fatalf("the socket is left after SIGTERM (%v)", err)
	}
	if strings.Contains(r.stderr.String(), d.Token) {
		t.Fatal("the service logged the token")
	}
}

// TestServiceRestart: a service killed with SIGKILL while connected leaves
// nothing the next one does not clean; with `up --persist` the next one
// reconnects by itself; after `down` it stays down. The tunnel runs in a
// daemon child here, which outlives a SIGKILLed parent for a moment.
func TestServiceRestart(t *testing.T) {
	r := newServiceRig(t)
	r.backend = backendDaemon
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := vpntest.New(t, vpntest.Options{})
	if _, err := d.AddRunningAgent(ctx, "dev", "main"); err != nil {
		t.Fatal(err)
	}
	r.start(t)
	if _, stderr, code := r.client(t, r.member, []string{"CODER_URL=" + d.URL.String(), "CODER_SESSION_TOKEN=" + d.Token},
		"up", "--persist"); code != 0 {
		t.Fatalf("up --persist: exit %d: %s\nservice:\n%s", code, stderr, r.stderr)
	}
	login := filepath.Join(r.state, "login.json")
	if fi, err := os.Stat(login); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("login.json after up --persist: %v %v", fi, err)
	}
	r.stop(t, syscall.SIGKILL)

	r.start(t)
	deadline := time.Now().Add(2 * time.Minute)
	for r.status(t, r.member).Lifecycle != "started" {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted service did not reconnect; stderr:\n%s", r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkTunConfigured(t, r.ns)
	curlByName(t, r.ns, "main.dev.me.coder")

	if _, stderr, code := r.client(t, r.member, nil, "down"); code != 0 {
		t.Fatalf("down: %d %s", code, stderr)
	}
	if _, err := os.Stat(login); !os.IsNotExist(err) {
		t.Fatalf("down left login.json (%v)", err)
	}
	if code := r.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	r.start(t)
	if st := r.status(t, r.member); st.Lifecycle != "stopped" {
		t.Fatalf("after down and a restart the service is %s", st.Lifecycle)
	}
	if v := readKernelView(t, r.ns, "coder0"); v.exists {
		t.Fatalf("a stopped service has coder0: %+v", v)
	}
	if code := r.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}
