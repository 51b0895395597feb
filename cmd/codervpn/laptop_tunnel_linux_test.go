package main

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// laptopTunnel is `codervpn vpn-daemon run` running inside a laptop, all of
// it: its control, DERP and WireGuard sockets and its TUN are the laptop's.
// The manager is the test's.
type laptopTunnel struct {
	m      *cliManager
	dev    *kernelDevice
	cmd    *exec.Cmd
	stderr *lockedBuffer
	events *eventLog
	pings  pingLog
}

// startLaptopTunnel opens coder0 in the laptop, spawns the daemon there
// through `ip netns exec` with the pipes and the TUN inherited as Coder
// Desktop's helper passes them, starts it against d, and waits until a ping
// of the agent went direct. Cleanup stops it.
func startLaptopTunnel(ctx context.Context, t *testing.T, l *laptop, d *vpntest.Deployment) *laptopTunnel {
	t.Helper()
	lt := &laptopTunnel{events: &eventLog{}, stderr: &lockedBuffer{}}
	lt.pings.changed = make(chan struct{})
	dev, err := openKernelDevice(ctx, kernelConfig{Name: "coder0", NetNS: "/run/netns/" + l.ns, Notify: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	lt.dev = dev
	t.Cleanup(func() { _ = dev.Close() })
	tunR, mgrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	mgrR, tunW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	lt.cmd = exec.Command("ip", "netns", "exec", l.ns, codervpnBinary(t), "vpn-daemon", "run", "--log-level", "debug",
		"--rpc-read-fd", strconv.Itoa(desktopReadFD), "--rpc-write-fd", strconv.Itoa(desktopWriteFD))
	lt.cmd.Env = []string{}
	lt.cmd.ExtraFiles = make([]*os.File, desktopTunFD-2)
	lt.cmd.ExtraFiles[desktopReadFD-3] = tunR
	lt.cmd.ExtraFiles[desktopWriteFD-3] = tunW
	lt.cmd.ExtraFiles[desktopTunFD-3] = dev.File()
	lt.cmd.Stderr = lt.stderr
	err = lt.cmd.Start()
	tunR.Close()
	tunW.Close()
	if err != nil {
		mgrR.Close()
		mgrW.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if lt.cmd.ProcessState == nil {
			_ = lt.cmd.Process.Kill()
			_ = lt.cmd.Wait()
		}
	})
	lt.m, err = newManager(ctx, mgrR, mgrW, managerConfig{
		Settings: dev, Out: lt.events, MinLog: vpnpb.Log_DEBUG, OnPeerUpdate: lt.pings.record,
	})
	if err != nil {
		t.Fatalf("handshake with the daemon: %v\n%s", err, lt.stderr)
	}
	t.Cleanup(func() { _ = lt.m.Close() })
	err = lt.m.Start(ctx, &vpnpb.StartRequest{CoderUrl: d.URL.String(), ApiToken: d.Token, TunnelFileDescriptor: desktopTunFD})
	if err != nil {
		t.Fatalf("Start: %v\n%s", err, lt.stderr)
	}
	if _, err := lt.pings.wait(ctx, time.Time{}, true); err != nil {
		t.Fatalf("no direct ping of the agent after Start: %v\n%s", err, lt.logs())
	}
	return lt
}

// stop sends Stop and expects exit 0.
func (lt *laptopTunnel) stop(ctx context.Context, t *testing.T) {
	t.Helper()
	if err := lt.m.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v\n%s", err, lt.stderr)
	}
	if code := exitCode(t, lt.cmd, time.Minute); code != exitOK {
		t.Fatalf("exit code %d after Stop, want 0\n%s", code, lt.stderr)
	}
}

// logs is the tunnel's log as forwarded to the manager, for failure
// messages: the last lines only.
func (lt *laptopTunnel) logs() string {
	lt.events.mu.Lock()
	defer lt.events.mu.Unlock()
	var b strings.Builder
	from := max(0, len(lt.events.events)-80)
	for _, e := range lt.events.events[from:] {
		b.WriteString(e.Time.Format("15:04:05.000") + " " + e.Level + " " + e.Message)
		for k, v := range e.Fields {
			b.WriteString(" " + k + "=" + v)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// loggedLine is one forwarded log line: when the tunnel logged it, and its
// message with its fields.
type loggedLine struct {
	at   time.Time
	text string
}

func (l loggedLine) String() string { return l.at.Format("15:04:05.000") + " " + l.text }

// warningsWith returns the forwarded warnings and errors that contain s:
// what a person is shown (the engine's debug lines name every device).
func (lt *laptopTunnel) warningsWith(s string) []loggedLine {
	return lt.linesWith(s, "warn", "error")
}

// linesWith returns the forwarded log lines at one of levels that
// contain s.
func (lt *laptopTunnel) linesWith(s string, levels ...string) []loggedLine {
	lt.events.mu.Lock()
	defer lt.events.mu.Unlock()
	var out []loggedLine
	for _, e := range lt.events.events {
		if !slices.Contains(levels, e.Level) {
			continue
		}
		line := e.Message
		for k, v := range e.Fields {
			line += " " + k + "=" + v
		}
		if strings.Contains(line, s) {
			out = append(out, loggedLine{at: e.Time, text: line})
		}
	}
	return out
}

// pingLog keeps when each PeerUpdate carrying an agent's ping arrived and
// whether that ping went direct (did_p2p).
type pingLog struct {
	mu      sync.Mutex
	pings   []ping
	changed chan struct{}
}

type ping struct {
	at  time.Time
	p2p bool
}

func (p *pingLog) record(u *vpnpb.PeerUpdate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range u.GetUpsertedAgents() {
		if lp := a.GetLastPing(); lp != nil {
			p.pings = append(p.pings, ping{at: time.Now(), p2p: lp.GetDidP2P()})
			close(p.changed)
			p.changed = make(chan struct{})
		}
	}
}

// wait returns the arrival of the first ping after since whose path is
// direct (p2p) or relayed (!p2p).
func (p *pingLog) wait(ctx context.Context, since time.Time, p2p bool) (time.Time, error) {
	for {
		p.mu.Lock()
		for _, pg := range p.pings {
			if pg.at.After(since) && pg.p2p == p2p {
				p.mu.Unlock()
				return pg.at, nil
			}
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}
