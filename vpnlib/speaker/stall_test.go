package speaker

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// bigLog is a one-way message larger than any pipe buffer (64 KiB on Linux,
// 16 KiB on macOS), so writing it to a peer that does not read must block.
func bigLog(n int) *vpnpb.TunnelMessage {
	return &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Log{Log: &vpnpb.Log{Message: strings.Repeat("x", n)}}}
}

// ioPipeTunnelPeer is rawTunnelPeer over io.Pipe, a writer without
// deadlines: the speaker must bound its writes with a timer there.
func ioPipeTunnelPeer(t *testing.T, opts Options[*vpnpb.ManagerMessage]) (*Tunnel, io.Reader) {
	t.Helper()
	toTunR, toTunW := io.Pipe()
	fromTunR, fromTunW := io.Pipe()
	t.Cleanup(func() {
		for _, c := range []io.Closer{toTunR, toTunW, fromTunR, fromTunW} {
			_ = c.Close()
		}
	})
	// io.Pipe has no buffer: write the manager's header while the tunnel
	// writes its own.
	go func() { _, _ = toTunW.Write([]byte("codervpn manager 1.3\n")) }()
	type res struct {
		s   *Tunnel
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := NewTunnel(testContext(t), toTunR, fromTunW, opts)
		ch <- res{s, err}
	}()
	header := make([]byte, len("codervpn tunnel 1.3\n"))
	if _, err := io.ReadFull(fromTunR, header); err != nil || string(header) != "codervpn tunnel 1.3\n" {
		t.Fatalf("tunnel header %q, %v", header, err)
	}
	r := recv(t, ch, "the handshake over io.Pipe")
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { _ = r.s.Close() })
	return r.s, fromTunR
}

// TestSpeakerWriteTimeoutEndsSession plays a manager that stops reading.
// Without a bound, the frame being written would block for ever while
// holding the write turn, and every later send (the engine's PeerUpdates,
// the logs, replies) would queue behind it. The speaker must instead end the
// session once a frame makes no progress for WriteTimeout, with an error
// that says the peer stopped reading, and release everything that waits:
// over a pollable os.File (write deadline) and over io.Pipe (timer).
func TestSpeakerWriteTimeoutEndsSession(t *testing.T) {
	const timeout = 300 * time.Millisecond
	opts := Options[*vpnpb.ManagerMessage]{WriteTimeout: timeout}
	cases := []struct {
		name  string
		start func(t *testing.T) (*Tunnel, io.Reader)
	}{
		{name: "os.Pipe deadline", start: func(t *testing.T) (*Tunnel, io.Reader) {
			s, peer := rawTunnelPeer(t, opts)
			return s, peer.r
		}},
		{name: "io.Pipe timer", start: func(t *testing.T) (*Tunnel, io.Reader) {
			return ioPipeTunnelPeer(t, opts)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tun, peer := tc.start(t)
			first := make(chan error, 1)
			go func() { first <- tun.Send(bigLog(1 << 20)) }()
			// The frame's length prefix arriving means its write holds the
			// write turn; the peer never reads again. A Send queued for the
			// turn must be released too.
			var prefix [4]byte
			if _, err := io.ReadFull(peer, prefix[:]); err != nil {
				t.Fatal(err)
			}
			queued := make(chan error, 1)
			go func() { queued <- tun.Send(&vpnpb.TunnelMessage{}) }()

			err := recv(t, first, "the stalled Send to give up")
			if !errors.Is(err, ErrWriteTimeout) || !strings.Contains(err.Error(), "no progress for "+timeout.String()) {
				t.Fatalf("stalled Send = %v, want ErrWriteTimeout naming the timeout", err)
			}
			if err := recv(t, queued, "the queued Send to give up"); !errors.Is(err, ErrClosed) {
				t.Fatalf("queued Send = %v, want ErrClosed", err)
			}
			waitDone(t, tun.Done(), "the session to end")
			if err := tun.Err(); !errors.Is(err, ErrWriteTimeout) {
				t.Fatalf("Err = %v, want ErrWriteTimeout", err)
			}
			if _, err := tun.Call(testContext(t), &vpnpb.TunnelMessage{}); !errors.Is(err, ErrClosed) {
				t.Fatalf("Call after the stall = %v, want ErrClosed", err)
			}
		})
	}
}

// TestSpeakerWriteTimeoutIsAboutProgress writes a frame that takes several
// write timeouts to drain into a slow but live reader: the timeout bounds a
// stall, not a frame, so a large PeerUpdate to a busy host is never cut off.
func TestSpeakerWriteTimeoutIsAboutProgress(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	tun, peer := rawTunnelPeer(t, Options[*vpnpb.ManagerMessage]{WriteTimeout: timeout})
	const size = 2 << 20 // 32 pipe buffers: about 3 s at the pace below
	read := make(chan error, 1)
	go func() {
		// The pace of a slow reader, well inside the timeout per chunk.
		tick := time.NewTicker(timeout / 10)
		defer tick.Stop()
		buf := make([]byte, 64<<10)
		for total := 0; total < size; {
			<-tick.C
			n, err := peer.r.Read(buf)
			if err != nil {
				read <- err
				return
			}
			total += n
		}
		read <- nil
	}()
	start := time.Now()
	if err := tun.Send(bigLog(size)); err != nil {
		t.Fatalf("Send to a slow reader: %v", err)
	}
	if err := recv(t, read, "the slow reader"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < timeout {
		t.Logf("the frame drained in %s, under the timeout: this run proves less", took)
	}
	if err := tun.Err(); err != nil {
		t.Fatalf("session ended: %v", err)
	}
}
