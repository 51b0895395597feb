package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// serviceRig is a `codervpn service` in a private network namespace with a
// group, a member and an outsider made for the test.
type serviceRig struct {
	bin, ns, sock, state, group string
	member, outsider            *user.User
	cmd                         *exec.Cmd
	stderr                      *lockedBuffer
	// bus is the system bus the service watches for logind's signals.
	bus string
	// backend is the service's --backend; empty: its default.
	backend string
}

// lockedBuffer collects a child's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// makeAccounts creates a group and two users (one in it) for one test run,
// and removes them at cleanup.
func makeAccounts(t *testing.T) (group string, member, outsider *user.User) {
	t.Helper()
	suffix := fmt.Sprintf("%d%04d", os.Getpid()%10000, rand.IntN(10000))
	group = "cvg" + suffix
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
	}
	run("groupadd", group)
	t.Cleanup(func() { _ = exec.Command("groupdel", group).Run() })
	for _, u := range []struct {
		name  string
		extra []string
	}{{"cvm" + suffix, []string{"-G", group}}, {"cvo" + suffix, nil}} {
		run("useradd", append([]string{"-M", "-N", "-s", "/usr/sbin/nologin"}, append(u.extra, u.name)...)...)
		name := u.name
		t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
	}
	var err error
	if member, err = user.Lookup("cvm" + suffix); err != nil {
		t.Fatal(err)
	}
	if outsider, err = user.Lookup("cvo" + suffix); err != nil {
		t.Fatal(err)
	}
	return group, member, outsider
}

func newServiceRig(t *testing.T) *serviceRig {
	t.Helper()
	requireRoot(t)
	requireTools(t, "ip", "curl", "useradd", "groupadd", "userdel", "groupdel", "setpriv")
	r := &serviceRig{bin: codervpnBinary(t), ns: testNetns(t)}
	r.group, r.member, r.outsider = makeAccounts(t)
	dir, err := os.MkdirTemp("", "codervpn-svc-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	r.sock = filepath.Join(dir, "run", "codervpn.sock")
	r.state = filepath.Join(dir, "state")
	return r
}

// start runs the service and waits for its socket.
func (r *serviceRig) start(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command(r.bin, "service", "--socket", r.sock, "--group", r.group, "--state-dir", r.state,
		"--netns", r.ns, "--log-level", "debug")
	if r.backend != "" {
		r.cmd.Args = append(r.cmd.Args, "--backend", r.backend)
	}
	bus := r.bus
	if bus == "" {
		bus = "unix:path=/nonexistent" // no system bus: the service says so and goes on
	}
	r.cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+bus)
	r.stderr = &lockedBuffer{}
	r.cmd.Stderr = r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := r.cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		if c, err := net.Dial("unix", r.sock); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service did not listen on %s; stderr:\n%s", r.sock, r.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and returns the exit code.
func (r *serviceRig) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return exitCode(t, r.cmd, time.Minute)
}

// client runs `codervpn args…` as u (nil: root) and returns stdout, stderr
// and the exit code.
func (r *serviceRig) client(t *testing.T, u *user.User, env []string, args ...string) (string, string, int) {
	t.Helper()
	name, argv := r.bin, args
	if u != nil {
		name = "setpriv"
		argv = append([]string{"--reuid", u.Uid, "--regid", u.Gid, "--init-groups", r.bin}, args...)
	}
	cmd := exec.Command(name, argv...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "CODERVPN_SOCKET=" + r.sock, "HOME=/nonexistent"}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code := exitCode(t, cmd, 3*time.Minute)
	return stdout.String(), stderr.String(), code
}

// coderConfig writes a Coder CLI login readable only by u.
func coderConfig(t *testing.T, u *user.User, d *vpntest.Deployment) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "coderv2-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	_ = os.WriteFile(filepath.Join(dir, "url"), []byte(d.URL.String()+"\n"), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "session"), []byte(d.Token+"\n"), 0o600)
	var uid, gid int
	fmt.Sscan(u.Uid, &uid)
	fmt.Sscan(u.Gid, &gid)
	for _, p := range []string{dir, filepath.Join(dir, "url"), filepath.Join(dir, "session")} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// curlByName fetches http://name/ with curl inside ns, the name resolved
// by the tunnel's DNS server: the namespace's resolv.conf (which `ip netns
// exec` mounts over /etc/resolv.conf) names only that server.
func curlByName(t *testing.T, ns, name string) {
	t.Helper()
	dir := filepath.Join(netnsEtcDir, ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	_ = os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver fd60:627a:a42b::53\noptions timeout:2 attempts:3\n"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "nsswitch.conf"), []byte(nsswitchFilesDNS()), 0o644)
	out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-q", "-sS", "--fail", "--noproxy", "*",
		"--max-time", "30", "http://"+name+"/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello from agent main") {
		t.Fatalf("curl http://%s/ in %s: %v: %s", name, ns, err, out)
	}
}

type statusOut struct {
	Lifecycle string `json:"lifecycle"`
	Peers     []struct {
		Agent string `json:"agent"`
		Name  string `json:"name"`
	} `json:"peers"`
}

func (r *serviceRig) status(t *testing.T, u *user.User) statusOut {
	t.Helper()
	stdout, stderr, code := r.client(t, u, nil, "status", "--json")
	var st statusOut
	if code != 0 || json.Unmarshal([]byte(stdout), &st) != nil {
		t.Fatalf("status --json: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	return st
}
