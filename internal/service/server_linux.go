package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/manager"
)

// Config configures a Server.
type Config struct {
	// Backend starts tunnels.
	Backend Backend
	// Group is who, besides root, may talk to the service.
	Group Group
	// StateDir holds login.json when a client asked to persist its login;
	// empty means logins are never written.
	StateDir string
	// Logger gets the service's records (never a token). Nil discards.
	Logger *slog.Logger
	// StartTimeout bounds a Start; zero means 90 s.
	StartTimeout time.Duration
	// CheckPeer decides whether a connection may talk; nil means
	// CheckPeer (SO_PEERCRED). Tests replace it.
	CheckPeer func(c net.Conn, g Group) error
}

// Server is the service: the tunnel and its clients.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	ops    chan op
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	clients map[*client]struct{}
	status  *vpnpb.Status // lifecycle and error; peers are added when sent
	peers   *manager.Peers
	login   *Login // the login of the running or wanted tunnel
}

// op is one operation of the tunnel loop; done gets its result.
type op struct {
	kind  string // "start", "stop", "wake", "ended"
	start *vpnpb.StartRequest
	retry bool // start: the saved login at startup; retry until it works
	done  chan error
}

// New makes a Server; Serve runs it, Close ends it.
func New(cfg Config) *Server {
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 90 * time.Second
	}
	if cfg.CheckPeer == nil {
		cfg.CheckPeer = CheckPeer
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	peers, _ := manager.NewPeers()
	s := &Server{
		cfg: cfg, log: log, ctx: ctx, cancel: cancel,
		ops:     make(chan op),
		clients: make(map[*client]struct{}),
		status:  &vpnpb.Status{Lifecycle: vpnpb.Status_STOPPED},
		peers:   peers,
	}
	s.wg.Go(s.tunnelLoop) // from here on Close must be called
	return s
}

// Serve accepts clients on l until Close. It first reconnects with the
// saved login, if a client asked to persist one. It returns nil after
// Close.
func (s *Server) Serve(l net.Listener) error {
	if s.cfg.StateDir != "" {
		login, err := loadLogin(s.cfg.StateDir)
		switch {
		case err != nil:
			s.log.Warn("not reconnecting", "error", err)
		case login != nil:
			s.log.Info("reconnecting with the saved login", "url", login.URL)
			s.wg.Go(func() { _ = s.do(op{kind: "start", start: login.request(), retry: true}) })
		}
	}
	stop := context.AfterFunc(s.ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept a client: %w", err)
		}
		s.wg.Go(func() { s.serveConn(c) })
	}
}

// Close stops the tunnel, drops every client and waits for every
// goroutine. A persisted login stays on disk: the service reconnects with it
// when it starts again. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Server) close() error {
	s.mu.Lock()
	for c := range s.clients {
		c.drop("the service is stopping")
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.doCtx(ctx, op{kind: "shutdown"})
	s.cancel()
	s.wg.Wait()
	return err
}

// do queues o on the tunnel loop and waits for its result.
func (s *Server) do(o op) error { return s.doCtx(s.ctx, o) }

func (s *Server) doCtx(ctx context.Context, o op) error {
	o.done = make(chan error, 1)
	select {
	case s.ops <- o:
	case <-ctx.Done():
		return errors.New("the service is stopping")
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return errors.New("the service is stopping")
	}
}

// Status is the current Status with the full peer picture.
func (s *Server) Status() *vpnpb.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statusLocked()
}

func (s *Server) statusLocked() *vpnpb.Status {
	st := &vpnpb.Status{Lifecycle: s.status.Lifecycle, ErrorMessage: s.status.ErrorMessage}
	if st.Lifecycle == vpnpb.Status_STARTED || st.Lifecycle == vpnpb.Status_STOPPING {
		st.PeerUpdate = fullUpdate(s.peers)
	} else {
		st.PeerUpdate = &vpnpb.PeerUpdate{}
	}
	return st
}

// fullUpdate is the whole picture as one PeerUpdate of upserts, sorted by
// name so that two clients print the same table.
func fullUpdate(p *manager.Peers) *vpnpb.PeerUpdate {
	u := &vpnpb.PeerUpdate{}
	for _, w := range p.Workspaces {
		u.UpsertedWorkspaces = append(u.UpsertedWorkspaces, w)
	}
	for _, a := range p.Agents {
		u.UpsertedAgents = append(u.UpsertedAgents, a)
	}
	sort.Slice(u.UpsertedWorkspaces, func(i, j int) bool {
		return u.UpsertedWorkspaces[i].GetName() < u.UpsertedWorkspaces[j].GetName()
	})
	sort.Slice(u.UpsertedAgents, func(i, j int) bool {
		return u.UpsertedAgents[i].GetName() < u.UpsertedAgents[j].GetName()
	})
	return u
}

// setLifecycle changes the lifecycle and broadcasts the Status.
func (s *Server) setLifecycle(l vpnpb.Status_Lifecycle, errMsg string) {
	s.mu.Lock()
	s.status = &vpnpb.Status{Lifecycle: l, ErrorMessage: Redact(errMsg, s.login.secrets()...)}
	if l == vpnpb.Status_STOPPED {
		s.peers, _ = manager.NewPeers()
	}
	s.broadcastLocked()
	s.mu.Unlock()
}

// onPeerUpdate merges a tunnel's PeerUpdate and broadcasts the Status.
func (s *Server) onPeerUpdate(u *vpnpb.PeerUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.peers.Apply(u) // records without a UUID cannot be keyed: left out
	s.broadcastLocked()
}

func (s *Server) broadcastLocked() {
	st := s.statusLocked()
	for c := range s.clients {
		c.pushStatus(st)
	}
}

// broadcast sends a one-way message (StartProgress) to every client.
func (s *Server) broadcast(m *vpnpb.ServiceMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		c.enqueue(outMsg{msg: m})
	}
}

func (s *Server) addClient(c *client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.clients[c] = struct{}{}
	return true
}

func (s *Server) removeClient(c *client) {
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
}

// Clients is how many clients are connected.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}
