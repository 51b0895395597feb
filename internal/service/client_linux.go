package service

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// Per-client limits.
const (
	// HandshakeTimeout bounds a client's header, as Coder Desktop's service
	// bounds it.
	HandshakeTimeout = 5 * time.Second
	// StallTimeout is how long a client may leave a frame unread before it
	// is dropped.
	StallTimeout = 5 * time.Second
	// QueueLen bounds a client's unanswered requests and its unsent
	// messages; a client that overruns either is dropped.
	QueueLen = 32
)

// client is one connected program.
type client struct {
	s    *Server
	sp   *speaker.Service
	reqs chan *vpnpb.ClientMessage
	out  chan outMsg
	// status is the latest Status not yet sent: Statuses coalesce, so a
	// slow client gets the newest picture, not a backlog.
	statusMu   sync.Mutex
	status     *vpnpb.Status
	statusKick chan struct{}
	dropOnce   sync.Once
	dropped    chan struct{}
}

type outMsg struct {
	req *vpnpb.ClientMessage // set for a reply
	msg *vpnpb.ServiceMessage
}

func (s *Server) serveConn(conn net.Conn) {
	if err := s.cfg.CheckPeer(conn, s.cfg.Group); err != nil {
		s.log.Info("refused a client", "reason", err)
		refuse(conn, err)
		return
	}
	r, w := speaker.SplitConn(conn)
	c := &client{
		s:          s,
		reqs:       make(chan *vpnpb.ClientMessage, QueueLen),
		out:        make(chan outMsg, QueueLen),
		statusKick: make(chan struct{}, 1),
		dropped:    make(chan struct{}),
	}
	ctx, cancel := context.WithTimeout(s.ctx, HandshakeTimeout)
	sp, err := speaker.NewService(ctx, r, w, speaker.Options[*vpnpb.ClientMessage]{
		OnRequest:    c.onRequest,
		WriteTimeout: StallTimeout,
	})
	cancel()
	if err != nil {
		s.log.Info("client handshake failed", "error", err)
		return
	}
	c.sp = sp
	if !s.addClient(c) {
		_ = sp.Close()
		return
	}
	defer s.removeClient(c)
	var wg sync.WaitGroup
	wg.Go(c.handleRequests)
	wg.Go(c.writeLoop)
	select {
	case <-sp.Done():
		if err := sp.Err(); err != nil && !errors.Is(err, io.EOF) {
			s.log.Info("client dropped", "error", err)
		}
	case <-c.dropped:
	case <-s.ctx.Done():
	}
	c.drop("")
	_ = sp.Close()
	wg.Wait()
}

// refuse tells a client that may not talk why, in one line it prints. Its
// header is read first, so the client is not writing when we close and
// sees our line rather than a broken pipe.
func refuse(conn net.Conn, why error) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(HandshakeTimeout))
	var b [1]byte
	for n := 0; n < 256; n++ {
		if _, err := conn.Read(b[:]); err != nil || b[0] == '\n' {
			break
		}
	}
	_, _ = io.WriteString(conn, RefusalPrefix+why.Error()+"\n")
	if uc, ok := conn.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
}

// RefusalPrefix starts the line a refused client reads instead of the
// service's header; the client prints the rest.
const RefusalPrefix = "codervpn service refused: "

// drop ends the client's session (why is logged when not empty). It never
// blocks, so it is safe from the read goroutine and under the server lock.
func (c *client) drop(why string) {
	c.dropOnce.Do(func() {
		if why != "" {
			c.s.log.Info("dropping a client", "reason", why)
		}
		close(c.dropped)
	})
}

// onRequest queues a request; a client that has QueueLen unanswered is
// flooding and is dropped.
func (c *client) onRequest(m *vpnpb.ClientMessage) {
	select {
	case c.reqs <- m:
	default:
		c.drop("it sent more than 32 requests without waiting for the answers")
	}
}

// enqueue queues a message to send; a client that has QueueLen unsent is
// not reading and is dropped.
func (c *client) enqueue(m outMsg) {
	select {
	case c.out <- m:
	default:
		c.drop("it stopped reading (32 messages waiting)")
	}
}

// pushStatus makes st the next Status to send, replacing one not sent yet.
func (c *client) pushStatus(st *vpnpb.Status) {
	c.statusMu.Lock()
	c.status = st
	c.statusMu.Unlock()
	select {
	case c.statusKick <- struct{}{}:
	default:
	}
}

// handleRequests runs the client's requests in order.
func (c *client) handleRequests() {
	for {
		select {
		case <-c.dropped:
			return
		case req := <-c.reqs:
			var resp *vpnpb.ServiceMessage
			switch m := req.Msg.(type) {
			case *vpnpb.ClientMessage_Status:
				resp = &vpnpb.ServiceMessage{Msg: &vpnpb.ServiceMessage_Status{Status: c.s.Status()}}
			case *vpnpb.ClientMessage_Start:
				err := c.s.do(op{kind: "start", start: m.Start})
				r := &vpnpb.StartResponse{Success: err == nil}
				if err != nil {
					r.ErrorMessage = c.s.redact(err.Error())
				}
				resp = &vpnpb.ServiceMessage{Msg: &vpnpb.ServiceMessage_Start{Start: r}}
			case *vpnpb.ClientMessage_Stop:
				err := c.s.do(op{kind: "stop"})
				r := &vpnpb.StopResponse{Success: err == nil}
				if err != nil {
					r.ErrorMessage = c.s.redact(err.Error())
				}
				resp = &vpnpb.ServiceMessage{Msg: &vpnpb.ServiceMessage_Stop{Stop: r}}
			default:
				c.drop("it sent a request of no known kind")
				return
			}
			c.enqueue(outMsg{req: req, msg: resp})
		}
	}
}

// writeLoop sends replies, broadcasts and the coalesced Status.
func (c *client) writeLoop() {
	for {
		var err error
		select {
		case <-c.dropped:
			return
		case m := <-c.out:
			if m.req != nil {
				err = c.sp.Reply(m.req, m.msg)
			} else {
				err = c.sp.Send(m.msg)
			}
		case <-c.statusKick:
			c.statusMu.Lock()
			st := c.status
			c.status = nil
			c.statusMu.Unlock()
			if st != nil {
				err = c.sp.Send(&vpnpb.ServiceMessage{Msg: &vpnpb.ServiceMessage_Status{Status: st}})
			}
		}
		if err != nil {
			c.drop("")
			return
		}
	}
}
