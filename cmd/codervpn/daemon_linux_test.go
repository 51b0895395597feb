package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// runDaemon runs `codervpn daemon` on the given files as fds 3, 4 (and 5).
func runDaemon(t *testing.T, files ...*os.File) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	args := []string{"daemon", "--rpc-read-fd", "3", "--rpc-write-fd", "4", "--log-level", "debug"}
	if len(files) == 3 {
		args = append(args, "--tun-fd", "5")
	}
	cmd := exec.Command(codervpnBinary(t), args...)
	cmd.ExtraFiles = files
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &stderr
}

// TestDaemonSession drives `codervpn daemon` as Coder Desktop would: a test
// manager (hosttest) on the other ends of the pipes and of a socketpair
// standing in for the TUN. Start, reach an agent's HTTP server through the
// daemon, Stop: the daemon exits 0.
func TestDaemonSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := vpntest.New(t, vpntest.Options{})
	agent, err := d.AddRunningAgent(ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	h := hosttest.New(t, hosttest.Options{})
	tun, rd, wr := h.TunnelFiles()
	cmd, stderr := runDaemon(t, rd, wr, tun)
	h.CloseTunnelEnds() // the daemon has its own; ours would hide its EOF

	if err := h.Connect(ctx); err != nil {
		t.Fatalf("handshake with the daemon: %v\n%s", err, stderr)
	}
	resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: d.URL.String(), ApiToken: d.Token})
	if err != nil || !resp.GetSuccess() {
		t.Fatalf("Start: %v %v\n%s", resp, err, stderr)
	}
	if _, err := h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool { return s.Agent("dev", "main") != nil }); err != nil {
		t.Fatal(err)
	}
	conn, err := h.DialTCP(ctx, netip.AddrPortFrom(agent.Addr, agent.HTTPPort))
	if err != nil {
		t.Fatalf("dial the agent through the daemon: %v", err)
	}
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: agent\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	conn.Close()
	if !strings.Contains(string(body), "hello from agent main") {
		t.Fatalf("agent answered %q", body)
	}
	stop, err := h.Stop(ctx)
	if err != nil || !stop.GetSuccess() {
		t.Fatalf("Stop: %v %v", stop, err)
	}
	select {
	case <-h.Done(): // the daemon closed its side after the StopResponse
	case <-ctx.Done():
		t.Fatal("no EOF from the daemon after the StopResponse")
	}
	if code := exitCode(t, cmd, time.Minute); code != 0 {
		t.Fatalf("daemon exit code %d after Stop, want 0\n%s", code, stderr)
	}
	if v := h.Violations(); len(v) > 0 {
		t.Fatalf("protocol violations: %v", v)
	}
	if !strings.Contains(stderr.String(), "the tunnel is running") {
		t.Errorf("the daemon's stderr lacks its logs:\n%s", stderr)
	}
}

// TestDaemonSessionEnd checks the exit code for the other ways a session
// ends: the manager hangs up (0), or breaks the protocol (1).
func TestDaemonSessionEnd(t *testing.T) {
	tests := []struct {
		name  string
		write func(w io.Writer)
		code  int
		log   string
	}{
		{"manager hangs up after the handshake", func(w io.Writer) {
			io.WriteString(w, "codervpn manager 1.3\n")
		}, exitOK, ""},
		// Before the handshake there was no session to end cleanly: the
		// tunnel core reports the missing header, and so does the exit code.
		{"manager hangs up before its handshake", func(io.Writer) {}, exitError,
			"peer closed the connection before sending its handshake header"},
		{"frame longer than 16 MiB", func(w io.Writer) {
			io.WriteString(w, "codervpn manager 1.3\n")
			binary.Write(w, binary.BigEndian, uint32(17<<20))
		}, exitError, "the session ended with an error"},
		{"not a CoderVPN manager", func(w io.Writer) {
			io.WriteString(w, "GET / HTTP/1.1\n")
		}, exitError, "the session ended with an error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			toDaemon, mgrW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			mgrR, fromDaemon, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer mgrR.Close()
			cmd, stderr := runDaemon(t, toDaemon, fromDaemon)
			toDaemon.Close()
			fromDaemon.Close()
			// The daemon's handshake line arrives whatever we send.
			line, err := bufio.NewReader(mgrR).ReadString('\n')
			if err != nil || line != "codervpn tunnel 1.3\n" {
				t.Fatalf("daemon's header %q, %v", line, err)
			}
			tc.write(mgrW)
			mgrW.Close()
			if code := exitCode(t, cmd, time.Minute); code != tc.code {
				t.Fatalf("exit code %d, want %d\n%s", code, tc.code, stderr)
			}
			if !strings.Contains(stderr.String(), tc.log) {
				t.Fatalf("stderr lacks %q:\n%s", tc.log, stderr)
			}
		})
	}
}
