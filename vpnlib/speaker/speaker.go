package speaker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// Message is what a speaker sends or receives: a ManagerMessage or a
// TunnelMessage. Both carry an RPC header, which the speaker fills in.
type Message interface {
	proto.Message
	GetRpc() *vpnpb.RPC
}

var (
	// ErrClosed is wrapped by every error a speaker returns once its session
	// is over, whatever ended it; the rest of the error says why (Err holds
	// the cause alone).
	ErrClosed = errors.New("CoderVPN session closed")
	// ErrUnsupportedByPeer is wrapped when a message cannot be sent because
	// the negotiated protocol version predates it (Wake needs 1.3). Nothing
	// was written; the session goes on.
	ErrUnsupportedByPeer = errors.New("not supported by the CoderVPN protocol version the peer speaks")
	// ErrWriteTimeout is wrapped by the error that ends a session whose peer
	// stopped reading: a frame made no progress for the write timeout. The
	// session cannot go on, since a half-written frame corrupts the stream.
	ErrWriteTimeout = errors.New("the peer stopped reading the CoderVPN pipe")
)

// DefaultWriteTimeout is how long one frame may wait for the peer to read
// before the session ends. A healthy peer drains the pipe in microseconds;
// one that has not read for this long is hung, and waiting longer would
// stall everything that sends: the engine's PeerUpdates, the logs, replies.
const DefaultWriteTimeout = 15 * time.Second

// errClosedLocally is the cause recorded when our own side calls Close.
var errClosedLocally = fmt.Errorf("%w: Close was called on this side", ErrClosed)

// Options configures a Speaker. R is the type of message received.
type Options[R Message] struct {
	// Versions are the protocol versions we offer, in the handshake's order
	// rules. Empty means []Version{CurrentVersion}. Tests use older lists to
	// play an old peer.
	Versions []Version
	// OnRequest gets each incoming request (rpc.msg_id != 0) in arrival
	// order. It is called on the read goroutine, so it must not block (and
	// must not call Close, which waits for that goroutine): hand the request
	// to your own goroutine and answer with Speaker.Reply. If nil, requests
	// are logged and dropped, and the peer's call waits for its deadline.
	OnRequest func(R)
	// OnMessage gets each one-way message (neither a request nor a reply),
	// under the same rules as OnRequest. If nil they are dropped.
	OnMessage func(R)
	// WriteTimeout bounds how long a frame may make no progress into a
	// peer that does not read; when it expires the session ends with an
	// error wrapping ErrWriteTimeout. Zero means DefaultWriteTimeout;
	// negative means wait for ever (only Close ends a blocked write).
	WriteTimeout time.Duration
	// Logger receives debug records about the session, never message
	// contents (a StartRequest holds the API token). Nil discards them.
	// It is the standard library's logger so that a host links the
	// protocol without any other logging library.
	Logger *slog.Logger
}

// Speaker is one end of a CoderVPN session: the handshake, the framing, and
// the request/reply matching, for either role. S is the message type it sends,
// R the type it receives. It is safe for concurrent use.
type Speaker[S, R Message] struct {
	role    Role
	version Version
	r       io.ReadCloser
	w       io.WriteCloser
	logger  *slog.Logger
	opts    Options[R]
	newR    func() R

	// writeSem holds one token while a frame is being written, so frames
	// never interleave; it is a channel so waiting for it can be abandoned.
	writeSem    chan struct{}
	writeClosed atomic.Bool // set by ReplyFinal, under writeSem; read anywhere

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan R
	err     error // why the session ended; nil while it runs

	done     chan struct{}
	readDone chan struct{}
	endOnce  sync.Once
	closeErr error // first error closing r or w, reported by Close

	closeROnce, closeWOnce sync.Once
	dropped                atomic.Uint64

	read readProgress // for Quiesce
}

// Tunnel is the tunnel's end: it sends TunnelMessages and receives
// ManagerMessages.
type Tunnel = Speaker[*vpnpb.TunnelMessage, *vpnpb.ManagerMessage]

// Manager is the manager's end (host application, or a test playing
// one): it sends ManagerMessages and receives TunnelMessages.
type Manager = Speaker[*vpnpb.ManagerMessage, *vpnpb.TunnelMessage]

// Client is a client's end of a session with the service: it sends
// ClientMessages and receives ServiceMessages.
type Client = Speaker[*vpnpb.ClientMessage, *vpnpb.ServiceMessage]

// Service is the service's end of a session with one client: it sends
// ServiceMessages and receives ClientMessages.
type Service = Speaker[*vpnpb.ServiceMessage, *vpnpb.ClientMessage]

// NewTunnel performs the handshake as the tunnel (bounded by ctx, which
// does not bound the session after that) and starts reading. The speaker owns
// r and w from now on, also on error: it closes both when the handshake fails
// and when the session ends. r and w must allow Close while a Read or Write is
// blocked and make that call return (os.File over a non-blocking fd, such as
// os.Pipe gives, net.Conn and io.Pipe do); otherwise Close cannot unblock them.
func NewTunnel(ctx context.Context, r io.ReadCloser, w io.WriteCloser,
	opts Options[*vpnpb.ManagerMessage],
) (*Tunnel, error) {
	return newSpeaker[*vpnpb.TunnelMessage](ctx, RoleTunnel, r, w, opts)
}

// NewManager is NewTunnel for the manager's end.
func NewManager(ctx context.Context, r io.ReadCloser, w io.WriteCloser,
	opts Options[*vpnpb.TunnelMessage],
) (*Manager, error) {
	return newSpeaker[*vpnpb.ManagerMessage](ctx, RoleManager, r, w, opts)
}

// NewClient is NewTunnel for a client of the service. Client and service
// speak their own protocol version (ServiceVersion when Options.Versions is
// empty) and refuse zero-length frames; the engine is the same.
func NewClient(ctx context.Context, r io.ReadCloser, w io.WriteCloser,
	opts Options[*vpnpb.ServiceMessage],
) (*Client, error) {
	return newSpeaker[*vpnpb.ClientMessage](ctx, RoleClient, r, w, opts)
}

// NewService is NewClient for the service's end of one client's session.
func NewService(ctx context.Context, r io.ReadCloser, w io.WriteCloser,
	opts Options[*vpnpb.ClientMessage],
) (*Service, error) {
	return newSpeaker[*vpnpb.ServiceMessage](ctx, RoleService, r, w, opts)
}

func newSpeaker[S, R Message](ctx context.Context, role Role, r io.ReadCloser, w io.WriteCloser,
	opts Options[R],
) (*Speaker[S, R], error) {
	var zeroR R
	rType := zeroR.ProtoReflect().Type()
	s := &Speaker[S, R]{
		role:     role,
		r:        r,
		w:        w,
		logger:   sessionLogger(opts.Logger, role),
		opts:     opts,
		newR:     func() R { return rType.New().Interface().(R) },
		writeSem: make(chan struct{}, 1),
		pending:  make(map[uint64]chan R),
		done:     make(chan struct{}),
		readDone: make(chan struct{}),
	}
	versions := opts.Versions
	if len(versions) == 0 {
		versions = []Version{CurrentVersion}
		if role.clientService() {
			versions = []Version{ServiceVersion}
		}
	}
	if err := validateVersionList(versions); err != nil {
		s.closeBoth()
		return nil, fmt.Errorf("Options.Versions: %w", err)
	}
	v, err := handshake(ctx, r, w, s.closeBoth, role, versions)
	if err != nil {
		s.closeBoth()
		return nil, fmt.Errorf("CoderVPN handshake as %s: %w", role, err)
	}
	s.version = v
	s.logger.DebugContext(ctx, "handshake complete", "version", v.String())
	go s.readLoop()
	return s, nil
}

// sessionLogger is what a speaker logs to: logger (one that discards when
// nil) with the speaker's role on every record.
func sessionLogger(logger *slog.Logger, role Role) *slog.Logger {
	if logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return logger.With("role", string(role))
}

// Version is the protocol version negotiated in the handshake: the newest
// both sides speak. What the speaker sends is limited to it.
func (s *Speaker[S, R]) Version() Version { return s.version }

// Done is closed when the session has ended: the peer closed its side, sent
// a corrupt frame, a write failed, or Close was called.
func (s *Speaker[S, R]) Done() <-chan struct{} { return s.done }

// Err says why the session ended, and is nil while it runs. A clean close by
// the peer wraps io.EOF; Close on our side wraps ErrClosed; a broken stream
// wraps ErrTruncatedFrame, ErrFrameTooLarge, ErrCorruptFrame or the I/O error.
func (s *Speaker[S, R]) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session: it closes r and w, which unblocks the read loop and
// any write stuck on a full pipe, fails every pending Call with an error
// wrapping ErrClosed, and waits for the read goroutine to exit. It is
// idempotent; only the first call reports errors from closing r and w. It must
// not be called from OnRequest or OnMessage.
func (s *Speaker[S, R]) Close() error {
	first := false
	s.endOnce.Do(func() {
		first = true
		s.finish(errClosedLocally)
	})
	<-s.readDone
	if first {
		return s.closeErr
	}
	return nil
}

// end records cause as the reason the session ended, unless it has already
// ended for another reason.
func (s *Speaker[S, R]) end(cause error) {
	s.endOnce.Do(func() { s.finish(cause) })
}

func (s *Speaker[S, R]) finish(cause error) {
	s.mu.Lock()
	s.err = cause
	s.mu.Unlock()
	close(s.done)
	s.closeBoth()
	s.logger.Debug("session ended", "error", cause)
}

func (s *Speaker[S, R]) closeBoth() {
	s.closeR()
	s.closeW()
}

func (s *Speaker[S, R]) closeR() {
	s.closeROnce.Do(func() { s.noteCloseErr("close read side", s.r.Close()) })
}

func (s *Speaker[S, R]) closeW() {
	s.closeWOnce.Do(func() { s.noteCloseErr("close write side", s.w.Close()) })
}

func (s *Speaker[S, R]) noteCloseErr(what string, err error) {
	if err == nil || errors.Is(err, os.ErrClosed) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeErr == nil {
		s.closeErr = fmt.Errorf("%s: %w", what, err)
	}
}

// endedErr is what operations return once the session is over: it wraps
// ErrClosed and the cause.
func (s *Speaker[S, R]) endedErr() error {
	return wrapEnded(s.Err())
}

func wrapEnded(cause error) error {
	if cause == nil || errors.Is(cause, ErrClosed) {
		return cause
	}
	return fmt.Errorf("%w: %w", ErrClosed, cause)
}

func (s *Speaker[S, R]) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *Speaker[S, R]) readLoop() {
	defer close(s.readDone)
	// The handshake read byte by byte; from here on we are the only reader,
	// so buffering saves a system call per frame header.
	br := bufio.NewReaderSize(s.r, payloadChunk)
	for {
		if br.Buffered() == 0 {
			s.read.caughtUp.Raise(s.read.dispatched.Load())
		}
		msg := s.newR()
		if err := readFrameOpts(br, msg, s.role.clientService()); err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("peer closed the CoderVPN connection: %w", err)
			} else {
				err = fmt.Errorf("read from peer: %w", err)
			}
			s.end(err) // no-op when Close caused the read error
			return
		}
		s.read.dispatched.Add(1) // before handing over: see Quiesce
		s.dispatch(msg)
	}
}

func (s *Speaker[S, R]) dispatch(msg R) {
	rpc := msg.GetRpc()
	switch {
	case rpc.GetResponseTo() != 0:
		s.deliverReply(msg)
	case rpc.GetMsgId() != 0:
		if s.opts.OnRequest == nil {
			s.logger.Warn("no request handler; dropping request",
				"kind", messageKind(msg), "msg_id", rpc.GetMsgId())
			return
		}
		s.opts.OnRequest(msg)
	default:
		if s.opts.OnMessage == nil {
			s.logger.Debug("no message handler; dropping message", "kind", messageKind(msg))
			return
		}
		s.opts.OnMessage(msg)
	}
}

func (s *Speaker[S, R]) deliverReply(msg R) {
	id := msg.GetRpc().GetResponseTo()
	s.mu.Lock()
	ch, ok := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if !ok {
		s.dropped.Add(1)
		s.logger.Debug("dropping reply nobody waits for",
			"response_to", id, "kind", messageKind(msg))
		return
	}
	ch <- msg // buffered, and removed from pending: never blocks
}
