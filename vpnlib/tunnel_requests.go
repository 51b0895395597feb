package vpnlib

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cdr.dev/slog/v3"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// controlLoop serves Start and Stop one at a time, in arrival order.
func (t *Tunnel) controlLoop() {
	for {
		select {
		case <-t.ctx.Done():
			return
		case req := <-t.control:
			switch m := req.GetMsg().(type) {
			case *vpnpb.ManagerMessage_Start:
				t.reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Start{Start: t.handleStart(m.Start)}})
			case *vpnpb.ManagerMessage_Stop:
				t.handleStop(req)
				return
			}
		}
	}
}

// queryLoop serves GetPeerUpdate and Wake, which must be answered at any
// moment, also while a Start is still connecting, and answers requests of
// kinds the tunnel does not serve.
func (t *Tunnel) queryLoop() {
	for {
		select {
		case <-t.ctx.Done():
			return
		case req := <-t.queries:
			switch req.GetMsg().(type) {
			case *vpnpb.ManagerMessage_GetPeerUpdate:
				t.reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_PeerUpdate{PeerUpdate: t.peerSnapshot()}})
			case *vpnpb.ManagerMessage_Wake:
				t.handleWake()
				t.reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Wake{Wake: &vpnpb.WakeResponse{}}})
			default:
				// A kind we do not serve (a newer manager's, or a
				// NetworkSettings "request"): an empty reply ends the
				// manager's wait instead of leaving it to time out.
				t.logger.Warn(t.ctx, "answering a request the tunnel does not serve with an empty reply",
					slog.F("msg_id", req.GetRpc().GetMsgId()), slog.F("kind", fmt.Sprintf("%T", req.GetMsg())))
				t.reply(req, &vpnpb.TunnelMessage{})
			}
			t.queriesOut.Add(1)
		}
	}
}

func (t *Tunnel) reply(req *vpnpb.ManagerMessage, resp *vpnpb.TunnelMessage) {
	// The logs of the work behind the reply go first: a manager that turns
	// a failed Start into one line, or a test that looks for the Wake's log
	// line when the WakeResponse arrives, must not see them trail in later.
	t.logs.flush(t.sendLog)
	sp := t.currentSpeaker()
	if err := sp.Reply(req, resp); err != nil {
		t.logger.Debug(t.ctx, "could not reply to the manager", slog.Error(err))
	}
}

// handleStart runs a Start to its end and says how it went.
func (t *Tunnel) handleStart(req *vpnpb.StartRequest) *vpnpb.StartResponse {
	t.mu.Lock()
	switch t.state {
	case stateStarting, stateRunning:
		t.mu.Unlock()
		return &vpnpb.StartResponse{ErrorMessage: "the tunnel is already started; send StopRequest first"}
	case stateStopped:
		t.mu.Unlock()
		return &vpnpb.StartResponse{ErrorMessage: "the tunnel was stopped and cannot start again; start a new tunnel"}
	}
	ctx, cancelCause := context.WithCancelCause(t.ctx)
	ctx, cancelTimeout := context.WithTimeout(ctx, t.cfg.StartTimeout)
	t.state = stateStarting
	t.startCancel = cancelCause
	t.mu.Unlock()

	t.logger.Info(t.ctx, "starting the tunnel",
		slog.F("coder_url", loggableURL(req.GetCoderUrl())), slog.F("headers", len(req.GetHeaders())))
	sess, err := t.connect(ctx, req)
	cancelTimeout()
	cancelCause(nil)

	t.mu.Lock()
	t.startCancel = nil
	if err == nil && t.state != stateStarting {
		err = errStoppedDuringStart
	}
	if err != nil {
		if t.state == stateStarting {
			t.state = stateIdle
		}
		t.mu.Unlock()
		if sess != nil {
			_ = sess.close()
		}
		t.logger.Error(t.ctx, "the tunnel did not start", slog.Error(err))
		return &vpnpb.StartResponse{ErrorMessage: err.Error()}
	}
	t.state = stateRunning
	t.session = sess
	t.mu.Unlock()
	t.logger.Info(t.ctx, "the tunnel is running")
	return &vpnpb.StartResponse{Success: true}
}

// quiesceWait bounds how long a Stop waits for requests that arrived with
// it to be read; only a manager in the middle of writing a frame makes it
// wait at all.
const quiesceWait = 500 * time.Millisecond

// queryDrainWait bounds how long a Stop waits for the query loop to answer
// the requests queued before it.
const queryDrainWait = 5 * time.Second

// handleStop stops the engine, answers any request already queued behind
// the Stop, sends the StopResponse as the last message, and ends the session.
//
// The StopResponse goes once the engine is closed (it carries no more
// traffic and the session sends nothing more); the coordinator's goodbye
// and the rest of the teardown finish after it, before the control loop
// returns, so Done and Close still wait for them.
func (t *Tunnel) handleStop(req *vpnpb.ManagerMessage) {
	t.logger.Info(t.ctx, "stopping the tunnel")
	sess := t.takeSession()
	var err error
	if sess != nil {
		err = sess.halt()
		defer sess.finish()
	}
	resp := &vpnpb.StopResponse{Success: err == nil}
	if err != nil {
		resp.ErrorMessage = err.Error()
		t.logger.Warn(t.ctx, "stopping the engine reported an error", slog.Error(err))
	} else {
		t.logger.Info(t.ctx, "the tunnel stopped")
	}
	// Requests that arrived before we closed our side still get an answer,
	// including those pipelined behind the Stop and still in the reader's
	// buffer: let the reader hand them over first.
	qctx, cancel := context.WithTimeout(t.ctx, quiesceWait)
	t.currentSpeaker().Quiesce(qctx)
	cancel()
	// The query loop answers what it was handed (a GetPeerUpdate, a Wake in
	// progress) before the final frame, not after it, when the reply could
	// no longer be sent (TestStopRaces). The session is halted by now, so
	// each is quick: an empty PeerUpdate, a wake that finds nothing to do.
	qctx, cancel = context.WithTimeout(t.ctx, queryDrainWait)
	if !t.queriesOut.Await(qctx, t.queriesIn.Load(), nil) {
		t.logger.Warn(t.ctx, "stopping without answering every request", slog.F("waited", queryDrainWait.String()))
	}
	cancel()
	for drained := false; !drained; {
		select {
		case later := <-t.control:
			switch later.GetMsg().(type) {
			case *vpnpb.ManagerMessage_Start:
				t.reply(later, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Start{Start: &vpnpb.StartResponse{
					ErrorMessage: "the tunnel was stopped and cannot start again; start a new tunnel",
				}}})
			case *vpnpb.ManagerMessage_Stop:
				t.reply(later, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Stop{Stop: &vpnpb.StopResponse{Success: true}}})
			}
		default:
			drained = true
		}
	}
	t.logs.flush(t.sendLog)
	sp := t.currentSpeaker()
	if err := sp.ReplyFinal(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Stop{Stop: resp}}); err != nil {
		t.logger.Debug(t.ctx, "could not send the StopResponse", slog.Error(err))
	}
	t.end()
}

// stopSession closes the running session, if any, and marks the tunnel
// stopped for good.
func (t *Tunnel) stopSession() {
	if sess := t.takeSession(); sess != nil {
		_ = sess.close()
	}
}

// takeSession marks the tunnel stopped for good and returns the running
// session, if any, for the caller to close.
func (t *Tunnel) takeSession() *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	sess := t.session
	t.session = nil
	t.state = stateStopped
	return sess
}

// peerSnapshot is the GetPeerUpdate answer: everything known, or nothing
// before Start and after Stop. It never holds t.mu while reading the engine.
func (t *Tunnel) peerSnapshot() *vpnpb.PeerUpdate {
	t.mu.Lock()
	sess := t.session
	t.mu.Unlock()
	if sess == nil {
		return &vpnpb.PeerUpdate{}
	}
	return sess.peers.snapshot()
}

func (t *Tunnel) handleWake() {
	t.mu.Lock()
	sess := t.session
	t.mu.Unlock()
	if sess == nil {
		t.logger.Debug(t.ctx, "system wake while not running; nothing to rebind")
		return
	}
	if sess.waker.wake() {
		t.logger.Info(t.ctx, "system wake: rebound sockets and re-ran STUN")
	} else {
		t.logger.Debug(t.ctx, "system wake ignored: rebound moments ago")
	}
}

// requestSettings is the settingsRequester: one NetworkSettings RPC, which
// asks the host to apply req.
func (t *Tunnel) requestSettings(ctx context.Context, req *vpnpb.NetworkSettingsRequest) error {
	sp := t.currentSpeaker()
	reply, err := sp.Call(ctx, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_NetworkSettings{NetworkSettings: req}})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("the host did not answer the network settings request within %s", t.cfg.SettingsTimeout)
		}
		return fmt.Errorf("send network settings to the host: %w", err)
	}
	ns := reply.GetNetworkSettings()
	if ns == nil {
		return fmt.Errorf("the host answered the network settings request with %T", reply.GetMsg())
	}
	if !ns.GetSuccess() {
		return settingsError(ns.GetErrorMessage())
	}
	return nil
}

// sendPeerUpdate delivers a one-way PeerUpdate.
func (t *Tunnel) sendPeerUpdate(u *vpnpb.PeerUpdate) {
	sp := t.currentSpeaker()
	if err := sp.Send(&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_PeerUpdate{PeerUpdate: u}}); err != nil {
		t.logger.Debug(t.ctx, "could not send a PeerUpdate", slog.Error(err))
	}
}
