package vpnlib_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/tailscale/wireguard-go/tun"
	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/tunfd"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/speaker"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// rawManager plays the manager with bytes the test writes itself, so that
// several requests can go on the pipe in one write: the order in which the
// tunnel reads them is then certain, and so is a clean EOF at a frame
// boundary after the last reply.
type rawManager struct {
	t   *testing.T
	w   *os.File
	r   *bufio.Reader
	tun *vpnlib.Tunnel
}

func newRawManager(t *testing.T) *rawManager {
	t.Helper()
	checkNoLeaks(t)
	tunR, tunW, mgrR, mgrW := vpnlib.RPCPipes(t)
	t.Cleanup(func() {
		for _, f := range []*os.File{tunR, mgrW, mgrR, tunW} {
			_ = f.Close()
		}
	})
	tun, err := vpnlib.NewTunnel(vpnlib.TunnelConfig{TunFD: -1, RPCRead: tunR, RPCWrite: tunW})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tun.Close() })
	if _, err := mgrW.WriteString("codervpn manager 1.3\n"); err != nil {
		t.Fatal(err)
	}
	m := &rawManager{t: t, w: mgrW, r: bufio.NewReader(mgrR), tun: tun}
	if line, err := m.r.ReadString('\n'); err != nil || line != "codervpn tunnel 1.3\n" {
		t.Fatalf("tunnel header %q, %v", line, err)
	}
	return m
}

// send writes every message, msg_id i+1 for the i-th, in a single write.
func (m *rawManager) send(msgs ...*vpnpb.ManagerMessage) {
	m.t.Helper()
	var buf []byte
	for i, msg := range msgs {
		msg.Rpc = &vpnpb.RPC{MsgId: uint64(i + 1)}
		b, err := proto.Marshal(msg)
		if err != nil {
			m.t.Fatal(err)
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(b)))
		buf = append(buf, b...)
	}
	if _, err := m.w.Write(buf); err != nil {
		m.t.Fatalf("write requests: %v", err)
	}
}

// reply returns the next reply, skipping one-way Logs and PeerUpdates; it
// returns io.EOF only when the stream ends exactly between two frames.
func (m *rawManager) reply() (*vpnpb.TunnelMessage, error) {
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(m.r, hdr[:]); err != nil {
			return nil, err // io.EOF: clean; io.ErrUnexpectedEOF: mid-header
		}
		b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(m.r, b); err != nil {
			return nil, fmt.Errorf("the stream ended inside a frame: %w", err)
		}
		msg := &vpnpb.TunnelMessage{}
		if err := proto.Unmarshal(b, msg); err != nil {
			return nil, fmt.Errorf("undecodable frame: %w", err)
		}
		if msg.GetRpc().GetResponseTo() != 0 {
			return msg, nil
		}
	}
}

// replies reads every reply until the tunnel closes its side, which must
// happen cleanly, and indexes them by the request id they answer.
func (m *rawManager) replies() map[uint64]*vpnpb.TunnelMessage {
	m.t.Helper()
	out := map[uint64]*vpnpb.TunnelMessage{}
	var last uint64
	for {
		msg, err := m.reply()
		if errors.Is(err, io.EOF) {
			if last != 1 {
				m.t.Errorf("the last reply answered request %d, want the StopRequest (1)", last)
			}
			return out
		}
		if err != nil {
			m.t.Fatalf("reading replies: %v (so far %v)", err, out)
		}
		last = msg.GetRpc().GetResponseTo()
		out[last] = msg
	}
}

func stopMsg() *vpnpb.ManagerMessage {
	return &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Stop{Stop: &vpnpb.StopRequest{}}}
}

func startMsg() *vpnpb.ManagerMessage {
	return &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{Start: &vpnpb.StartRequest{
		CoderUrl: "http://127.0.0.1:1", ApiToken: "token-never-used",
	}}}
}

// TestTunnelStartStopOrder drives the Start/Stop orderings a manager can
// produce through a real tunnel. The reference implementation is weak here;
// we promise: a second Start is refused while the first runs; a Start that
// follows a Stop is refused (or, once the tunnel has closed its side after
// the StopResponse, fails as a closed session rather than hanging); a Stop
// with nothing started succeeds; and every Stop ends with the StopResponse
// as the last frame, then a clean EOF.
func TestTunnelStartStopOrder(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{name: "start twice", run: func(t *testing.T) {
			r := newRig(t, rigOptions{deployment: &vpntest.Options{}})
			r.start(nil)
			resp, err := r.h.Start(r.ctx, &vpnpb.StartRequest{CoderUrl: r.d.URL.String(), ApiToken: r.d.Token})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Success || !strings.Contains(resp.ErrorMessage, "already started") {
				t.Fatalf("second Start: %v, want an error saying already started", resp)
			}
			// The first session is untouched and still stops cleanly.
			if _, err := r.h.GetPeerUpdate(r.ctx); err != nil {
				t.Fatal(err)
			}
			r.stop()
		}},
		{name: "start queued behind stop", run: func(t *testing.T) {
			m := newRawManager(t)
			m.send(stopMsg(), startMsg())
			got := m.replies()
			if st := got[1].GetStop(); st == nil || !st.Success {
				t.Fatalf("StopRequest answered %v", got[1])
			}
			// Requests read before the StopResponse are answered; one the
			// tunnel had not yet read when it sent its final reply cannot be,
			// and the manager's call ends with the session instead. Either
			// way the Start must never run.
			if got[2] == nil {
				t.Log("the Start was not read before the StopResponse; it ended with the session")
			} else if st := got[2].GetStart(); st == nil || st.Success || !strings.Contains(st.ErrorMessage, "stopped") {
				t.Fatalf("StartRequest behind the Stop answered %v, want an error saying it was stopped", got[2])
			}
			waitTunnel(t, m.tun)
		}},
		{name: "start after stop response", run: func(t *testing.T) {
			r := newRig(t, rigOptions{deployment: &vpntest.Options{}})
			r.start(nil)
			r.stop()
			ctx, cancel := context.WithTimeout(r.ctx, testTimeout/4)
			defer cancel()
			_, err := r.h.Start(ctx, &vpnpb.StartRequest{CoderUrl: r.d.URL.String(), ApiToken: r.d.Token})
			if !errors.Is(err, speaker.ErrClosed) {
				t.Fatalf("Start after the StopResponse: %v, want the closed session's error", err)
			}
		}},
		{name: "stop before start", run: func(t *testing.T) {
			r := newRig(t, rigOptions{})
			r.stop() // success, tunnel done, the manager saw EOF
			if err := r.h.Err(); !errors.Is(err, io.EOF) {
				t.Fatalf("the manager's session ended with %v, want a clean EOF", err)
			}
			if err := r.tun.Err(); err != nil {
				t.Fatalf("tunnel Err after a clean stop: %v", err)
			}
		}},
		{name: "stop before start, bytes", run: func(t *testing.T) {
			m := newRawManager(t)
			m.send(stopMsg())
			if st := m.replies()[1].GetStop(); st == nil || !st.Success {
				t.Fatal("StopRequest not answered with success")
			}
			waitTunnel(t, m.tun)
		}},
		{name: "stop twice", run: func(t *testing.T) {
			m := newRawManager(t)
			m.send(stopMsg(), stopMsg())
			got := m.replies()
			for id := uint64(1); id <= 2; id++ {
				if st := got[id].GetStop(); st == nil || !st.Success {
					t.Fatalf("StopRequest %d answered %v", id, got[id])
				}
			}
			waitTunnel(t, m.tun)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}

// waitTunnel waits for a tunnel to end after a clean stop.
func waitTunnel(t *testing.T, tun *vpnlib.Tunnel) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	select {
	case <-tun.Done():
	case <-ctx.Done():
		t.Fatal("the tunnel did not end after its StopResponse")
	}
	if err := tun.Err(); err != nil {
		t.Fatalf("tunnel Err after a clean stop: %v", err)
	}
}

// closeWatchedDevice records that the engine closed the tunnel device.
type closeWatchedDevice struct {
	tun.Device
	once   sync.Once
	closed chan struct{}
}

func (d *closeWatchedDevice) Close() error {
	d.once.Do(func() { close(d.closed) })
	return d.Device.Close()
}

// The StopResponse says the tunnel carries no more traffic: by the time the
// manager reads it the engine has closed the device. What the StopResponse
// no longer waits for (the coordinator's goodbye) is done by Done: the
// rig's leak check finds every goroutine gone.
func TestStopResponseAfterDeviceClosed(t *testing.T) {
	dev := &closeWatchedDevice{closed: make(chan struct{})}
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}, config: func(c *vpnlib.TunnelConfig) {
		c.OpenTun = func(fd int) (tun.Device, error) {
			d, err := tunfd.Open(fd, tunfd.Options{MTU: tunfd.TunnelMTU})
			if err != nil {
				return nil, err
			}
			dev.Device = d
			return dev, nil
		}
	}})
	r.startWithAgent(r.d.URL.String())
	resp, err := r.h.Stop(r.step())
	if err != nil || !resp.GetSuccess() {
		t.Fatalf("stop: %v %v", resp, err)
	}
	select {
	case <-dev.closed:
	default:
		t.Fatal("the StopResponse came while the tunnel device was still open")
	}
	r.waitDone(testTimeout)
}
