package vpnlib_test

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"cdr.dev/slog/v3"
	"cdr.dev/slog/v3/sloggers/slogtest"
	"github.com/coder/coder/v2/codersdk"

	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/speaker"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// stalledTunnel is a running tunnel (one workspace, no agents) whose
// manager has stopped reading: its reader is parked and the tunnel→manager
// pipe is full, as a hung Coder Desktop would leave it. Nothing but a
// PeerUpdate writes once the pipe is full: no status rounds, no logs.
type stalledTunnel struct {
	d   *vpntest.Deployment
	ws  *vpntest.Workspace
	tun *vpnlib.Tunnel
	mgr *speaker.Manager
}

func newStalledTunnel(ctx context.Context, t *testing.T, writeTimeout time.Duration) *stalledTunnel {
	t.Helper()
	d := vpntest.New(t, vpntest.Options{
		Logger: slogtest.Make(t, &slogtest.Options{IgnoreErrors: true}).Leveled(slog.LevelInfo).Named("deployment"),
	})
	ws, err := d.AddWorkspace("dev", codersdk.WorkspaceStatusRunning)
	if err != nil {
		t.Fatal(err)
	}

	tunR, tunW, mgrR, mgrW := vpnlib.RPCPipes(t)
	utun, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	reader := fdtest.NewPausableReader(mgrR)
	t.Cleanup(func() {
		for _, c := range []io.Closer{tunR, mgrW, reader, tunW} {
			_ = c.Close()
		}
		_ = unix.Close(utun[0])
		_ = unix.Close(utun[1])
	})

	tun, err := vpnlib.NewTunnel(vpnlib.TunnelConfig{
		TunFD: utun[1], RPCRead: tunR, RPCWrite: tunW,
		WriteTimeout: writeTimeout,
		PingInterval: time.Hour,
		LogLevel:     slog.LevelFatal,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tun.Close() })

	var mgr *speaker.Manager
	mgr, err = speaker.NewManager(ctx, reader, mgrW, speaker.Options[*vpnpb.TunnelMessage]{
		OnRequest: func(req *vpnpb.TunnelMessage) {
			// Accept the network settings, off the read goroutine.
			go func() {
				_ = mgr.Reply(req, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_NetworkSettings{
					NetworkSettings: &vpnpb.NetworkSettingsResponse{Success: true},
				}})
			}()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Close() })
	resp, err := mgr.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{
		Start: &vpnpb.StartRequest{CoderUrl: d.URL.String(), ApiToken: d.Token},
	}})
	if err != nil || !resp.GetStart().GetSuccess() {
		t.Fatalf("start: %v %v", resp, err)
	}

	// Stop reading: park the manager's reader before junk can reach it.
	// Any message from the tunnel wakes the read in progress, and a Wake
	// brings one (its reply).
	reader.Pause()
	wake := make(chan error, 1)
	go func() {
		_, err := mgr.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Wake{Wake: &vpnpb.WakeRequest{}}})
		wake <- err
	}()
	t.Cleanup(func() {
		_ = mgr.Close()
		<-wake // its reply, if any, was never read
	})
	select {
	case <-reader.Parked():
	case <-ctx.Done():
		t.Fatal("the manager's reader never parked")
	}
	t.Logf("filled the tunnel→manager pipe with %d bytes", fdtest.FillPipe(t, tunW))
	return &stalledTunnel{d: d, ws: ws, tun: tun, mgr: mgr}
}

// TestTunnelManagerStopsReading: the deployment adds an agent to a stalled
// tunnel, so the workspace-updates controller's callback sends a PeerUpdate
// into the full pipe. Without a write bound that callback would block the
// controller for ever (and Close with it, which waits for the controller).
// The session must instead end within the write timeout with an error
// saying the manager stopped reading, and release every fd and goroutine.
func TestTunnelManagerStopsReading(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	const writeTimeout = 500 * time.Millisecond
	st := newStalledTunnel(ctx, t, writeTimeout)

	started := time.Now()
	if _, err := st.d.AddAgent(ctx, st.ws.ID, "main"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.tun.Done():
	case <-ctx.Done():
		t.Fatal("the tunnel never ended: a send into the full pipe blocks for ever")
	}
	t.Logf("the session ended %s after the agent was added", time.Since(started).Round(time.Millisecond))
	if err := st.tun.Err(); !errors.Is(err, speaker.ErrWriteTimeout) {
		t.Fatalf("tunnel Err = %v, want ErrWriteTimeout", err)
	}
}

// stopBound is how long Close may take with a manager that stopped
// reading (the C ABI's coderStopVPN promises it): the engine's teardown and
// the coordinator's bounded goodbye, never the write timeout.
const stopBound = time.Second

// TestTunnelCloseWhileManagerStopsReading: a PeerUpdate is blocked on the
// full pipe (the controller's callback, holding the lock that halting the
// session takes) when the host closes the tunnel, as a NetworkExtension
// calling coderStopVPN from its only reader does. Close must not wait out
// the 15 s write timeout: it returns within stopBound.
func TestTunnelCloseWhileManagerStopsReading(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	st := newStalledTunnel(ctx, t, speaker.DefaultWriteTimeout)
	if _, err := st.d.AddAgent(ctx, st.ws.ID, "main"); err != nil {
		t.Fatal(err)
	}
	// Blocked in the write, or waiting for its turn behind another one
	// (the DNS names changed: a NetworkSettings request may be first).
	waitGoroutine(ctx, t, "vpnlib.(*peerTracker).Update", "speaker.(*Speaker[...]).write(")

	started := time.Now()
	_ = st.tun.Close()
	took := time.Since(started)
	t.Logf("Close returned %s after it was called, with a PeerUpdate blocked on the full pipe", took.Round(time.Millisecond))
	if took > stopBound {
		t.Fatalf("Close took %s with a manager that stopped reading, want at most %s", took.Round(time.Millisecond), stopBound)
	}
}

// waitGoroutine waits until some goroutine's stack holds every one of
// marks: the test's way of knowing a send is blocked before it acts.
func waitGoroutine(ctx context.Context, t *testing.T, marks ...string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n == len(buf) { // cut short: take them all
			buf = make([]byte, 2*len(buf))
			continue
		}
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			found := true
			for _, m := range marks {
				found = found && strings.Contains(g, m)
			}
			if found {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no goroutine ever blocked in %v", marks)
		case <-time.After(10 * time.Millisecond): // polling stacks: nothing to wait on
		}
	}
}
