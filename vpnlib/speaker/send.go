package speaker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// Call sends msg as a request and waits for the peer's reply. It assigns
// rpc.msg_id (1, 2, ... per speaker) on the copy it sends; msg itself is not
// modified. It returns early when ctx is done (a reply arriving later is
// dropped, never handed to another caller) or when the session ends (the
// error wraps ErrClosed and says why it ended).
func (s *Speaker[S, R]) Call(ctx context.Context, msg S) (R, error) {
	var zero R
	kind := messageKind(msg)
	id, ch, err := s.register()
	if err != nil {
		return zero, fmt.Errorf("call %s: %w", kind, err)
	}
	if err := s.write(ctx, msg, &vpnpb.RPC{MsgId: id}, false); err != nil {
		s.unregister(id)
		return zero, fmt.Errorf("call %s: %w", kind, err)
	}
	var cause error
	select {
	case resp := <-ch:
		return resp, nil
	case <-ctx.Done():
		cause = context.Cause(ctx)
	case <-s.done:
		cause = s.endedErr()
	}
	if !s.unregister(id) {
		// The read loop took the entry just now: the reply is in ch, or about
		// to be. Hand it over rather than lose it.
		return <-ch, nil
	}
	return zero, fmt.Errorf("call %s (msg_id %d): no reply: %w", kind, id, cause)
}

// Send writes msg as a one-way message (no msg_id, not a reply); any RPC
// header msg carries is left out. It returns once the frame is written.
func (s *Speaker[S, R]) Send(msg S) error {
	if err := s.write(context.Background(), msg, nil, false); err != nil {
		return fmt.Errorf("send %s: %w", messageKind(msg), err)
	}
	return nil
}

// Reply answers req (a request handed to OnRequest) with msg, setting
// rpc.response_to to req's msg_id on the copy it sends.
func (s *Speaker[S, R]) Reply(req R, msg S) error {
	return s.reply(req, msg, false)
}

// ReplyFinal is Reply for the last thing this side will ever send (the
// StopResponse): after the frame is written, our write side is closed so
// the peer reads a clean EOF. Reading goes on until the peer closes its side
// or Close is called; later writes fail with an error wrapping ErrClosed.
func (s *Speaker[S, R]) ReplyFinal(req R, msg S) error {
	return s.reply(req, msg, true)
}

func (s *Speaker[S, R]) reply(req R, msg S, final bool) error {
	id := req.GetRpc().GetMsgId()
	if id == 0 {
		return fmt.Errorf("reply to %s: it is not a request (no msg_id)", messageKind(req))
	}
	if err := s.write(context.Background(), msg, &vpnpb.RPC{ResponseTo: id}, final); err != nil {
		return fmt.Errorf("reply %s to request %d: %w", messageKind(msg), id, err)
	}
	return nil
}

// register allocates the next request id and the channel its reply will be
// delivered on.
func (s *Speaker[S, R]) register() (uint64, chan R, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, nil, wrapEnded(s.err)
	}
	s.nextID++
	ch := make(chan R, 1)
	s.pending[s.nextID] = ch
	return s.nextID, ch, nil
}

// unregister forgets a pending request, reporting whether it was still
// pending (false: its reply has been, or is being, delivered).
func (s *Speaker[S, R]) unregister(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pending[id]
	delete(s.pending, id)
	return ok
}

// write sends one frame built from msg with the given RPC header. ctx bounds
// only the wait for our turn to write: once bytes of a frame are on the wire
// it must be finished or the session ended, so only Close or the write
// timeout (a peer that stopped reading) can interrupt it. Every wait here is
// thus bounded, which is what lets the engine's callbacks send.
func (s *Speaker[S, R]) write(ctx context.Context, msg S, rpc *vpnpb.RPC, final bool) error {
	out, err := s.prepare(msg, rpc)
	if err != nil {
		return err
	}
	frame, err := encodeFrame(out)
	if err != nil {
		return err
	}
	// Checked first: after our own final reply the answer is the same
	// whether or not the peer has also hung up by now.
	if s.writeClosed.Load() {
		return errFinalReplySent
	}
	select {
	case s.writeSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for our turn to write: %w", context.Cause(ctx))
	case <-s.done:
		return s.endedErr()
	}
	defer func() { <-s.writeSem }()
	if s.isDone() {
		return s.endedErr()
	}
	if s.writeClosed.Load() {
		return errFinalReplySent
	}
	if err := s.writeFrame(messageKind(out), frame); err != nil {
		if !s.isDone() {
			s.end(writeFailed(messageKind(out), err))
		}
		return s.endedErr()
	}
	if final {
		s.writeClosed.Store(true)
		s.closeW()
	}
	return nil
}

var errFinalReplySent = fmt.Errorf("%w: this side already sent its final reply and closed its write side", ErrClosed)

// writeFailed says why a write ended the session. A pipe or socket whose
// reader has gone (EPIPE, ECONNRESET) is the peer hanging up, the same event
// as the end of stream on the read side: which of the two this side sees
// first is a race it does not control, so both wrap io.EOF and a host that
// hangs up is never reported as a broken session.
func writeFailed(kind string, err error) error {
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("peer closed the CoderVPN connection (write %s: %w): %w", kind, err, io.EOF)
	}
	return fmt.Errorf("write %s to peer: %w", kind, err)
}

// writeChunk is the most written under one deadline: the timeout is about a
// peer making no progress, so a large frame to a slow but live reader is
// never cut off. It is a Linux pipe's default capacity.
const writeChunk = 64 << 10

// deadlineWriter is a writer whose blocked Write can be given a deadline:
// *os.File over a pollable (non-blocking) fd, net.Conn.
type deadlineWriter interface{ SetWriteDeadline(time.Time) error }

// writeFrame writes frame, ending the session when the peer reads none of it
// for the write timeout. Where w takes deadlines the Write itself returns at
// expiry; otherwise (io.Pipe, a blocking fd) a timer ends the session, which
// closes w and so unblocks the Write, as NewTunnel requires of w.
func (s *Speaker[S, R]) writeFrame(kind string, frame []byte) error {
	timeout := s.opts.WriteTimeout
	if timeout == 0 {
		timeout = DefaultWriteTimeout
	}
	if timeout < 0 {
		_, err := s.w.Write(frame)
		return err
	}
	// Built only when a write stalls: this runs for every frame.
	stalled := func() error {
		return fmt.Errorf("write %s to peer: %w: a %d-byte frame made no progress for %s, "+
			"and a half-written frame cannot be taken back, so the session ends",
			kind, ErrWriteTimeout, len(frame), timeout)
	}
	dw, _ := s.w.(deadlineWriter)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for written := 0; written < len(frame); {
		if dw != nil && dw.SetWriteDeadline(time.Now().Add(timeout)) != nil {
			dw = nil // os.ErrNoDeadline: not pollable; use the timer
		}
		if dw == nil {
			if timer == nil {
				timer = time.AfterFunc(timeout, func() { s.end(stalled()) })
			} else {
				timer.Reset(timeout)
			}
		}
		n, err := s.w.Write(frame[written:min(len(frame), written+writeChunk)])
		written += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err := stalled()
			s.end(err)
			return err
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// prepare returns what goes on the wire for msg: a new top-level message
// sharing msg's payload with the given RPC header (so the caller's message is
// never modified and may be reused), after the version gates below.
func (s *Speaker[S, R]) prepare(msg S, rpc *vpnpb.RPC) (proto.Message, error) {
	switch m := any(msg).(type) {
	case *vpnpb.ManagerMessage:
		if m == nil {
			return nil, errors.New("nil message")
		}
		return gateManagerMessage(s.version, &vpnpb.ManagerMessage{Rpc: rpc, Msg: m.Msg})
	case *vpnpb.TunnelMessage:
		if m == nil {
			return nil, errors.New("nil message")
		}
		return gateTunnelMessage(s.version, &vpnpb.TunnelMessage{Rpc: rpc, Msg: m.Msg})
	case *vpnpb.ClientMessage:
		if m == nil {
			return nil, errors.New("nil message")
		}
		return &vpnpb.ClientMessage{Rpc: rpc, Msg: m.Msg}, nil
	case *vpnpb.ServiceMessage:
		if m == nil {
			return nil, errors.New("nil message")
		}
		return &vpnpb.ServiceMessage{Rpc: rpc, Msg: m.Msg}, nil
	default:
		return nil, fmt.Errorf("cannot send %T: not a CoderVPN message", msg)
	}
}

func unsupported(kind string, need, have Version) error {
	return fmt.Errorf("%s: %w (it needs %s, the session speaks %s)", kind, ErrUnsupportedByPeer, need, have)
}

// gateManagerMessage applies the version gates to what the manager sends.
// m is already our own top-level copy; payloads it shares with the caller
// are cloned before being changed.
//
//   - WakeRequest exists since 1.3: refused (ErrUnsupportedByPeer) below it.
//   - StartRequest.device_id, device_os and coder_desktop_version exist since
//     1.1: stripped below it (the rest of the request still works).
func gateManagerMessage(v Version, m *vpnpb.ManagerMessage) (*vpnpb.ManagerMessage, error) {
	switch msg := m.Msg.(type) {
	case *vpnpb.ManagerMessage_Wake:
		if !v.AtLeast(Version13) {
			return nil, unsupported("WakeRequest", Version13, v)
		}
	case *vpnpb.ManagerMessage_Start:
		st := msg.Start
		if !v.AtLeast(Version11) && (st.GetDeviceId() != "" || st.GetDeviceOs() != "" || st.GetCoderDesktopVersion() != "") {
			st = proto.CloneOf(st)
			st.DeviceId, st.DeviceOs, st.CoderDesktopVersion = "", "", ""
			m.Msg = &vpnpb.ManagerMessage_Start{Start: st}
		}
	}
	return m, nil
}

// gateTunnelMessage applies the version gates to what the tunnel sends.
//
//   - WakeResponse exists since 1.3: refused (ErrUnsupportedByPeer) below it.
//   - Agent.last_ping exists since 1.2: stripped from every agent of a
//     PeerUpdate below it.
func gateTunnelMessage(v Version, m *vpnpb.TunnelMessage) (*vpnpb.TunnelMessage, error) {
	switch msg := m.Msg.(type) {
	case *vpnpb.TunnelMessage_Wake:
		if !v.AtLeast(Version13) {
			return nil, unsupported("WakeResponse", Version13, v)
		}
	case *vpnpb.TunnelMessage_PeerUpdate:
		pu := msg.PeerUpdate
		if !v.AtLeast(Version12) && hasLastPing(pu) {
			pu = proto.CloneOf(pu)
			for _, a := range pu.UpsertedAgents {
				a.LastPing = nil
			}
			for _, a := range pu.DeletedAgents {
				a.LastPing = nil
			}
			m.Msg = &vpnpb.TunnelMessage_PeerUpdate{PeerUpdate: pu}
		}
	}
	return m, nil
}

func hasLastPing(pu *vpnpb.PeerUpdate) bool {
	for _, a := range pu.GetUpsertedAgents() {
		if a.GetLastPing() != nil {
			return true
		}
	}
	for _, a := range pu.GetDeletedAgents() {
		if a.GetLastPing() != nil {
			return true
		}
	}
	return false
}
