package speaker

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
)

// rawTunnelPeer hand-plays the manager's side of the handshake against one of
// our tunnel speakers and returns the speaker and the manager's pipe end.
func rawTunnelPeer(t *testing.T, opts Options[*vpnpb.ManagerMessage]) (*Tunnel, pipeEnd) {
	t.Helper()
	peer, us := newPipePair(t)
	if _, err := peer.w.WriteString("codervpn manager 1.3\n"); err != nil {
		t.Fatal(err)
	}
	tun, err := NewTunnel(testContext(t), us.r, us.w, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tun.Close() })
	header := make([]byte, len("codervpn tunnel 1.3\n"))
	if _, err := io.ReadFull(peer.r, header); err != nil || string(header) != "codervpn tunnel 1.3\n" {
		t.Fatalf("tunnel header %q, %v", header, err)
	}
	return tun, peer
}

func TestSpeakerCloseIdle(t *testing.T) {
	t.Parallel()
	tun, _ := rawTunnelPeer(t, Options[*vpnpb.ManagerMessage]{})
	if tun.Err() != nil {
		t.Fatalf("Err while running = %v, want nil", tun.Err())
	}
	closed := make(chan error, 1)
	go func() { closed <- tun.Close() }()
	if err := recv(t, closed, "Close of an idle speaker (its reader is blocked in read)"); err != nil {
		t.Fatal(err)
	}
	waitDone(t, tun.Done(), "Done")
	if err := tun.Err(); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "Close was called on this side") {
		t.Fatalf("Err after Close = %v", err)
	}
	if err := tun.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
}

func TestSpeakerCloseUnblocksWriter(t *testing.T) {
	t.Parallel()
	tun, peer := rawTunnelPeer(t, Options[*vpnpb.ManagerMessage]{})
	// 1 MiB cannot fit in a pipe buffer (64 KiB on Linux, 16 KiB on macOS) and
	// the peer stops reading after the length prefix: the write must block.
	big := &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Log{Log: &vpnpb.Log{Message: strings.Repeat("x", 1<<20)}}}
	sendErr := make(chan error, 1)
	go func() { sendErr <- tun.Send(big) }()
	var prefix [4]byte
	if _, err := io.ReadFull(peer.r, prefix[:]); err != nil {
		t.Fatal(err)
	}
	// A second writer queues behind the blocked one.
	queued := make(chan error, 1)
	go func() { queued <- tun.Send(&vpnpb.TunnelMessage{}) }()
	select {
	case err := <-sendErr:
		t.Fatalf("Send of 1 MiB to a peer that does not read returned early: %v", err)
	default:
	}
	start := time.Now()
	if err := tun.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan error{sendErr, queued} {
		err := recv(t, ch, "blocked Send to return after Close")
		if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "Close was called on this side") {
			t.Fatalf("blocked Send after Close = %v, want ErrClosed saying we closed", err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v to unblock writers", d)
	}
}

func TestSpeakerCloseFailsPendingCalls(t *testing.T) {
	t.Parallel()
	tun, peer := rawTunnelPeer(t, Options[*vpnpb.ManagerMessage]{})
	const pending = 3
	errs := make(chan error, pending)
	for range pending {
		go func() {
			_, err := tun.Call(testContext(t), &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_NetworkSettings{}})
			errs <- err
		}()
	}
	// All three requests reached the wire, so all three are pending.
	for range pending {
		if err := readFrame(peer.r, &vpnpb.TunnelMessage{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tun.Close(); err != nil {
		t.Fatal(err)
	}
	for range pending {
		err := recv(t, errs, "pending call to fail")
		if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "no reply") {
			t.Fatalf("pending Call after Close = %v", err)
		}
	}
}

func TestSpeakerCorruptFrameEndsSession(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		bytes  []byte
		wantIs error
	}{
		{name: "garbage payload", bytes: frameBytes(3, []byte{0xff, 0xff, 0xff}), wantIs: ErrCorruptFrame},
		{name: "oversize", bytes: frameBytes(MaxFrameSize+1, nil), wantIs: ErrFrameTooLarge},
		{name: "truncated", bytes: frameBytes(10, []byte{0x0a}), wantIs: ErrTruncatedFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tun, peer := rawTunnelPeer(t, Options[*vpnpb.ManagerMessage]{})
			callErr := make(chan error, 1)
			go func() {
				_, err := tun.Call(testContext(t), &vpnpb.TunnelMessage{})
				callErr <- err
			}()
			if _, err := peer.w.Write(tt.bytes); err != nil {
				t.Fatal(err)
			}
			if tt.wantIs == ErrTruncatedFrame {
				_ = peer.w.Close()
			}
			waitDone(t, tun.Done(), "session end")
			if err := tun.Err(); !errors.Is(err, tt.wantIs) || errors.Is(err, io.EOF) {
				t.Fatalf("Err = %v, want %v (and not a clean EOF)", err, tt.wantIs)
			}
			if err := recv(t, callErr, "pending call"); !errors.Is(err, tt.wantIs) || !errors.Is(err, ErrClosed) {
				t.Fatalf("pending call = %v, want ErrClosed wrapping %v", err, tt.wantIs)
			}
			// The speaker closed its side: the peer reads EOF.
			if _, err := io.ReadAll(peer.r); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSpeakerHandshakeFailureClosesFiles(t *testing.T) {
	t.Parallel()
	peer, us := newPipePair(t)
	if _, err := peer.w.WriteString("codervpn tunnel 1.3\n"); err != nil {
		t.Fatal(err)
	}
	_, err := NewTunnel(testContext(t), us.r, us.w, Options[*vpnpb.ManagerMessage]{})
	if err == nil || !strings.Contains(err.Error(), `"codervpn tunnel 1.3"`) || !strings.Contains(err.Error(), "handshake as tunnel") {
		t.Fatalf("NewTunnel = %v, want a handshake error quoting the peer's header", err)
	}
	if _, err := us.w.Write([]byte{0}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("write side after failed handshake: %v, want it closed", err)
	}
	if _, err := us.r.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read side after failed handshake: %v, want it closed", err)
	}
}

func TestSpeakerRejectsBadVersionsOption(t *testing.T) {
	t.Parallel()
	_, us := newPipePair(t)
	_, err := NewManager(testContext(t), us.r, us.w, Options[*vpnpb.TunnelMessage]{
		Versions: []Version{{2, 0}, {1, 3}},
	})
	if err == nil || !strings.Contains(err.Error(), "Options.Versions") {
		t.Fatalf("NewManager with an unsorted list = %v", err)
	}
}

func TestSpeakerHandshakeTimeout(t *testing.T) {
	t.Parallel()
	_, us := newPipePair(t) // the peer never says anything
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := NewTunnel(ctx, us.r, us.w, Options[*vpnpb.ManagerMessage]{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("NewTunnel with a silent peer = %v, want deadline exceeded", err)
	}
}

// TestSpeakerNoFDLeak is not parallel: another test's pipes would be taken
// for this one's.
func TestSpeakerNoFDLeak(t *testing.T) {
	before := fdtest.Take(t)
	for i := range 3 {
		mEnd, tEnd := newPipePair(t)
		ctx := testContext(t)
		tch := make(chan *Tunnel, 1)
		go func() {
			s, err := NewTunnel(ctx, tEnd.r, tEnd.w, Options[*vpnpb.ManagerMessage]{})
			if err != nil {
				t.Error(err)
			}
			tch <- s
		}()
		m, err := NewManager(ctx, mEnd.r, mEnd.w, Options[*vpnpb.TunnelMessage]{})
		if err != nil {
			t.Fatal(err)
		}
		tun := <-tch
		if i%2 == 0 {
			_ = m.Close()
			waitDone(t, tun.Done(), "tunnel end after manager close")
		} else {
			_ = tun.Close()
		}
		_ = m.Close()
		_ = tun.Close()
		// A failed handshake closes what it was given, too.
		bad, us := newPipePair(t)
		_ = bad.w.Close()
		if _, err := NewTunnel(ctx, us.r, us.w, Options[*vpnpb.ManagerMessage]{}); err == nil {
			t.Fatal("handshake against a closed peer succeeded")
		}
		_ = bad.r.Close()
	}
	before.Check(t, fdtest.Pipes, "the speakers")
}

// A host that hangs up may be noticed by a write (EPIPE) before the read
// loop sees the end of stream; either way it is the peer closing the
// session, never a broken one. Here the peer closes only its read side, so
// the write is certain to notice first.
func TestSpeakerWriteToGonePeerIsHangUp(t *testing.T) {
	t.Parallel()
	tun, peer := rawTunnelPeer(t, Options[*vpnpb.ManagerMessage]{})
	_ = peer.r.Close()
	err := tun.Send(&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Log{Log: &vpnpb.Log{Message: "x"}}})
	if err == nil {
		t.Fatal("Send to a peer whose read side is closed succeeded")
	}
	waitDone(t, tun.Done(), "Done after the failed write")
	got := tun.Err()
	if !errors.Is(got, io.EOF) || !strings.Contains(got.Error(), "peer closed the CoderVPN connection") {
		t.Fatalf("Err = %v, want the peer's hang-up (io.EOF)", got)
	}
	if errors.Is(got, ErrWriteTimeout) {
		t.Fatalf("Err = %v: a hang-up is not a stalled write", got)
	}
}
