package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/status"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// The fd numbers the child inherits its ends at. Coder Desktop's helper
// passes whatever numbers its pipes have (it clears FD_CLOEXEC and
// posix_spawns); numbers other than 3, 4, 5 and with gaps between them make
// sure nothing assumes a layout.
const (
	desktopReadFD  = 7
	desktopWriteFD = 9
	desktopTunFD   = 12
)

// desktopForm is one way Coder's builds tell `vpn-daemon run` its pipes.
type desktopForm struct {
	name string
	args []string // after "vpn-daemon run"
	env  []string
}

var desktopForms = []desktopForm{
	// What Coder Desktop for macOS runs.
	{"macOS flags", []string{"--rpc-read-fd", strconv.Itoa(desktopReadFD), "--rpc-write-fd", strconv.Itoa(desktopWriteFD)}, nil},
	{"macOS variables", nil, []string{
		"CODER_VPN_DAEMON_RPC_READ_FD=" + strconv.Itoa(desktopReadFD), "CODER_VPN_DAEMON_RPC_WRITE_FD=" + strconv.Itoa(desktopWriteFD)}},
	// What Coder's Linux and Windows builds take.
	{"Linux flags", []string{"--rpc-read-handle", strconv.Itoa(desktopReadFD), "--rpc-write-handle", strconv.Itoa(desktopWriteFD)}, nil},
	{"Linux variables", nil, []string{
		"CODER_VPN_DAEMON_RPC_READ_HANDLE=" + strconv.Itoa(desktopReadFD), "CODER_VPN_DAEMON_RPC_WRITE_HANDLE=" + strconv.Itoa(desktopWriteFD)}},
}

// spawnAsDesktop starts `codervpn vpn-daemon run` as Coder Desktop's helper
// does: the pipe ends and the TUN inherited (at desktop*FD), the TUN's
// number on no command line (it goes in the StartRequest), and an
// environment holding only what form sets (the helper's posix_spawn passes
// none). Our copies of the child's ends are closed once it has its own.
func spawnAsDesktop(t *testing.T, form desktopForm, rd, wr, tun *os.File) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(codervpnBinary(t), append([]string{"vpn-daemon", "run", "--log-level", "debug"}, form.args...)...)
	cmd.Env = append([]string{}, form.env...)
	cmd.ExtraFiles = make([]*os.File, desktopTunFD-2) // entry i is fd 3+i; nil is closed
	cmd.ExtraFiles[desktopReadFD-3] = rd
	cmd.ExtraFiles[desktopWriteFD-3] = wr
	cmd.ExtraFiles[desktopTunFD-3] = tun
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // a test that failed before exitCode
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &stderr
}

// TestVPNDaemonAsCoderDesktop runs `codervpn vpn-daemon run` in every form
// Coder's builds use, spawned as Coder Desktop spawns it, with a test manager
// (hosttest) on the other ends of the pipes and of a socketpair standing in
// for the utun: Start with only the fd number, an HTTP request to an agent
// through the daemon, Stop, exit 0, and the daemon's logs reached the
// manager as Log messages.
func TestVPNDaemonAsCoderDesktop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	d := vpntest.New(t, vpntest.Options{})
	agent, err := d.AddRunningAgent(ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range desktopForms {
		t.Run(form.name, func(t *testing.T) {
			h := hosttest.New(t, hosttest.Options{})
			tun, rd, wr := h.TunnelFiles()
			cmd, stderr := spawnAsDesktop(t, form, rd, wr, tun)
			h.CloseTunnelEnds()
			startDesktopSession(ctx, t, h, d, stderr)
			body, err := h.HTTPGet(ctx, netip.AddrPortFrom(agent.Addr, agent.HTTPPort), "/")
			if err != nil || !strings.Contains(body, "hello from agent main") {
				t.Fatalf("GET from the agent through the daemon: %q, %v\n%s", body, err, stderr)
			}
			if stop, err := h.Stop(ctx); err != nil || !stop.GetSuccess() {
				t.Fatalf("Stop: %v %v\n%s", stop, err, stderr)
			}
			if code := exitCode(t, cmd, time.Minute); code != exitOK {
				t.Fatalf("exit code %d after Stop, want 0\n%s", code, stderr)
			}
			checkDesktopSession(t, h)
		})
	}
}

// startDesktopSession performs the handshake and a Start whose
// tunnel_file_descriptor is the child's number for the utun.
func startDesktopSession(ctx context.Context, t *testing.T, h *hosttest.Host, d *vpntest.Deployment, stderr *bytes.Buffer) {
	t.Helper()
	if err := h.Connect(ctx); err != nil {
		t.Fatalf("handshake with the daemon: %v\n%s", err, stderr)
	}
	resp, err := h.Start(ctx, &vpnpb.StartRequest{
		CoderUrl: d.URL.String(), ApiToken: d.Token, TunnelFileDescriptor: desktopTunFD,
		DeviceOs: "macOS", CoderDesktopVersion: "0.8.0",
	})
	if err != nil || !resp.GetSuccess() {
		t.Fatalf("Start: %v %v\n%s", resp, err, stderr)
	}
	if _, err := h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool { return s.Agent("dev", "main") != nil }); err != nil {
		t.Fatalf("no PeerUpdate with the agent: %v\n%s", err, stderr)
	}
}

// checkDesktopSession checks what the manager saw of a finished session.
func checkDesktopSession(t *testing.T, h *hosttest.Host) {
	t.Helper()
	if v := h.Violations(); len(v) > 0 {
		t.Errorf("protocol violations: %v", v)
	}
	if len(h.Logs()) == 0 {
		t.Error("the daemon sent no Log message: Coder Desktop gets the tunnel's logs only that way")
	}
}

// TestVPNDaemonSessionEnds checks the other ways Coder Desktop ends the
// daemon: it quits and the pipes close (exit 0), or it sends Stop and then
// SIGTERM at once, as its helper's close does (exit 0 whichever comes
// first).
func TestVPNDaemonSessionEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := vpntest.New(t, vpntest.Options{})
	if _, err := d.AddRunningAgent(ctx, "dev", "main"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		end  func(t *testing.T, h *hosttest.Host, cmd *exec.Cmd)
	}{
		{"manager hangs up while running", func(_ *testing.T, h *hosttest.Host, _ *exec.Cmd) { h.HangUp() }},
		{"Stop then SIGTERM", func(t *testing.T, h *hosttest.Host, cmd *exec.Cmd) {
			if stop, err := h.Stop(ctx); err != nil || !stop.GetSuccess() {
				t.Fatalf("Stop: %v %v", stop, err)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && err != os.ErrProcessDone {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := hosttest.New(t, hosttest.Options{})
			tun, rd, wr := h.TunnelFiles()
			cmd, stderr := spawnAsDesktop(t, desktopForms[0], rd, wr, tun)
			h.CloseTunnelEnds()
			startDesktopSession(ctx, t, h, d, stderr)
			tc.end(t, h, cmd)
			if code := exitCode(t, cmd, time.Minute); code != exitOK {
				t.Fatalf("exit code %d, want 0\n%s", code, stderr)
			}
		})
	}
}

// eventLog is a status.Sink that keeps what the manager reports.
type eventLog struct {
	mu     sync.Mutex
	events []status.Event
}

func (l *eventLog) Emit(e status.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) count(typ status.EventType) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// TestVPNDaemonKernelTUN is Coder Desktop's arrangement on a real kernel
// TUN: as root, a TUN in a private network namespace whose fd the daemon
// inherits and learns only from the StartRequest; the manager (the CLI's)
// applies the settings the daemon asks for to the TUN, and curl in the
// namespace reaches an agent through the kernel. Stop: exit 0, and with the
// device closed the interface is gone.
func TestVPNDaemonKernelTUN(t *testing.T) {
	requireRoot(t)
	requireTools(t, "ip", "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := vpntest.New(t, vpntest.Options{})
	agent, err := d.AddRunningAgent(ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	ns := testNetns(t)
	events := &eventLog{}
	dev, err := openKernelDevice(ctx, kernelConfig{Name: "coder0", NetNS: "/run/netns/" + ns, Notify: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	tunR, mgrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	mgrR, tunW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd, stderr := spawnAsDesktop(t, desktopForms[0], tunR, tunW, dev.File())
	tunR.Close()
	tunW.Close()
	m, err := newManager(ctx, mgrR, mgrW, managerConfig{Settings: dev, Out: events, MinLog: vpnpb.Log_DEBUG})
	if err != nil {
		t.Fatalf("handshake with the daemon: %v\n%s", err, stderr)
	}
	defer m.Close()
	err = m.Start(ctx, &vpnpb.StartRequest{CoderUrl: d.URL.String(), ApiToken: d.Token, TunnelFileDescriptor: desktopTunFD})
	if err != nil {
		t.Fatalf("Start: %v\n%s", err, stderr)
	}
	err = m.Wait(ctx, func(v managerView) bool {
		for _, r := range v.Rows() {
			if r.Agent == "main" {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no peer row for the agent: %v\n%s", err, stderr)
	}
	checkTunConfigured(t, ns)
	curlAgentInNetns(ctx, t, ns, agent.Addr)
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v\n%s", err, stderr)
	}
	if code := exitCode(t, cmd, time.Minute); code != exitOK {
		t.Fatalf("exit code %d after Stop, want 0\n%s", code, stderr)
	}
	if events.count(status.EventLog) == 0 {
		t.Error("no Log message reached the manager")
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if v := readKernelView(t, ns, "coder0"); v.exists {
		t.Fatalf("coder0 outlived the daemon and the device: %+v", v)
	}
}
