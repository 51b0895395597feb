package manager

import (
	"context"
	"errors"
	"fmt"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// Everything the tunnel sends (requests and one-way messages alike) goes
// through one queue to one worker goroutine, for two reasons. The speaker's
// read goroutine must never block, and applying settings can take a while
// (netlink, D-Bus). And a host sees the session in the order the tunnel
// wrote it: the settings a Start needed are applied, and its logs
// delivered, before the StartResponse is returned (Call's catchUp).

// receive runs on the speaker's read goroutine: it queues msg for the
// worker and returns at once.
func (s *Session) receive(msg *vpnpb.TunnelMessage) {
	s.mu.Lock()
	s.queue = append(s.queue, msg)
	s.received++
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // the worker is already due to look
	}
}

// run is the worker: it handles each message in arrival order, until the
// session has ended and the queue is empty.
func (s *Session) run() {
	defer close(s.done)
	for {
		msg, ok := s.next()
		if !ok {
			return
		}
		s.handle(msg)
		s.handled.Add(1)
	}
}

// next waits for the next message; false once the session is over and
// nothing is left.
func (s *Session) next() (*vpnpb.TunnelMessage, bool) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			msg := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return msg, true
		}
		s.mu.Unlock()
		select {
		case <-s.kick:
		case <-s.sp.Done():
			// The read loop has dispatched its last message: one more
			// look at the queue, then stop.
			s.mu.Lock()
			empty := len(s.queue) == 0
			s.mu.Unlock()
			if empty {
				return nil, false
			}
		}
	}
}

// catchUp waits until everything received so far has been handled, the
// worker has stopped, or ctx ends.
func (s *Session) catchUp(ctx context.Context) {
	s.mu.Lock()
	target := s.received
	s.mu.Unlock()
	s.handled.Await(ctx, target, s.done)
}

func (s *Session) handle(msg *vpnpb.TunnelMessage) {
	if msg.GetRpc().GetMsgId() != 0 {
		s.serve(msg)
		return
	}
	switch m := msg.GetMsg().(type) {
	case *vpnpb.TunnelMessage_Log:
		if s.cfg.OnLog != nil {
			s.cfg.OnLog(m.Log)
		}
	case *vpnpb.TunnelMessage_PeerUpdate:
		if s.cfg.OnPeerUpdate != nil {
			s.cfg.OnPeerUpdate(m.PeerUpdate)
		}
	default:
		s.violate("the tunnel sent a one-way %s; only Log and PeerUpdate may be sent without a request", describe(msg))
	}
}

// serve answers one request. The only request a tunnel may send is
// NetworkSettings; anything else gets no answer (the tunnel's call times
// out) and is a violation.
func (s *Session) serve(req *vpnpb.TunnelMessage) {
	id := req.GetRpc().GetMsgId()
	ns := req.GetNetworkSettings()
	if ns == nil {
		s.violate("the tunnel sent a %s request (msg_id %d); a manager serves only NetworkSettings", describe(req), id)
		return
	}
	err := s.cfg.Settings.ApplySettings(s.ctx, ns)
	if errors.Is(err, ErrNoAnswer) {
		return
	}
	resp := &vpnpb.NetworkSettingsResponse{Success: err == nil}
	if err != nil {
		resp.ErrorMessage = err.Error()
	}
	err = s.sp.Reply(req, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_NetworkSettings{NetworkSettings: resp}})
	if err != nil && !errors.Is(err, speaker.ErrClosed) {
		s.violate("reply to NetworkSettings request %d: %v", id, err)
	}
}

func (s *Session) violate(format string, args ...any) {
	if s.cfg.OnViolation != nil {
		s.cfg.OnViolation(fmt.Errorf(format, args...))
	}
}
