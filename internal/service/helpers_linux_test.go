package service

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// testTimeout bounds every wait; only a failure takes this long.
const testTimeout = 60 * time.Second

// fakeBackend records Starts and hands out fakeRunnings.
type fakeBackend struct {
	mu      sync.Mutex
	starts  []*vpnpb.StartRequest
	fail    error
	block   chan struct{} // Start waits for it when set
	running *fakeRunning
	started chan struct{} // gets a value per Start call
	events  Events        // of the last Start
}

func newFakeBackend() *fakeBackend { return &fakeBackend{started: make(chan struct{}, 64)} }

func (b *fakeBackend) Start(ctx context.Context, req *vpnpb.StartRequest, ev Events) (Running, error) {
	b.mu.Lock()
	b.starts = append(b.starts, req)
	fail, block := b.fail, b.block
	b.mu.Unlock()
	b.started <- struct{}{}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	r := &fakeRunning{done: make(chan struct{}), wakes: make(chan struct{}, 16)}
	b.mu.Lock()
	b.running, b.events = r, ev
	b.mu.Unlock()
	ev.PeerUpdate(&vpnpb.PeerUpdate{
		UpsertedWorkspaces: []*vpnpb.Workspace{{Id: bytes.Repeat([]byte{1}, 16), Name: "dev", Status: vpnpb.Workspace_RUNNING}},
		UpsertedAgents: []*vpnpb.Agent{{Id: bytes.Repeat([]byte{2}, 16), Name: "main",
			WorkspaceId: bytes.Repeat([]byte{1}, 16), Fqdn: []string{"main.dev.me.coder."}}},
	})
	return r, nil
}

func (b *fakeBackend) Starts() []*vpnpb.StartRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*vpnpb.StartRequest(nil), b.starts...)
}

func (b *fakeBackend) Running() *fakeRunning {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running
}

type fakeRunning struct {
	mu      sync.Mutex
	stopped bool
	done    chan struct{}
	once    sync.Once
	wakes   chan struct{}
}

func (r *fakeRunning) Stop(context.Context) error {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.once.Do(func() { close(r.done) })
	return nil
}
func (r *fakeRunning) Wake(context.Context) error { r.wakes <- struct{}{}; return nil }
func (r *fakeRunning) Done() <-chan struct{}      { return r.done }
func (r *fakeRunning) Err() error                 { return errors.New("fake tunnel died") }
func (r *fakeRunning) Stopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// syncBuffer is a log sink tests read.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testService struct {
	srv  *Server
	sock string
	logs *syncBuffer
	be   *fakeBackend
}

// startService runs a Server on a socket in a temporary directory; the
// caller's own group is the service's group.
func startService(t testing.TB, be *fakeBackend, stateDir string) *testService {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	g := Group{Name: "testgroup", GID: os.Getgid()}
	l, err := Listen(sock, g)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	srv := New(Config{Backend: be, Group: g, StateDir: stateDir,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testService{srv: srv, sock: sock, logs: logs, be: be}
}

// testClient is a client speaker with every Status it got.
type testClient struct {
	sp       *speaker.Client
	statuses chan *vpnpb.Status
	progress chan *vpnpb.StartProgress
}

func dialClient(t *testing.T, sock string) *testClient {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testClient{statuses: make(chan *vpnpb.Status, 256), progress: make(chan *vpnpb.StartProgress, 64)}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	r, w := speaker.SplitConn(conn)
	tc.sp, err = speaker.NewClient(ctx, r, w, speaker.Options[*vpnpb.ServiceMessage]{
		OnMessage: func(m *vpnpb.ServiceMessage) {
			switch {
			case m.GetStatus() != nil:
				// Never block the read loop (a client that stops reading
				// is dropped): when full, the oldest Status goes.
				for {
					select {
					case tc.statuses <- m.GetStatus():
						return
					default:
						select {
						case <-tc.statuses:
						default:
						}
					}
				}
			case m.GetStartProgress() != nil:
				tc.progress <- m.GetStartProgress()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.sp.Close() })
	return tc
}

func (tc *testClient) call(t *testing.T, m *vpnpb.ClientMessage) *vpnpb.ServiceMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := tc.sp.Call(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func startMsg(token string, persist bool) *vpnpb.ClientMessage {
	return &vpnpb.ClientMessage{Msg: &vpnpb.ClientMessage_Start{Start: &vpnpb.StartRequest{
		CoderUrl: "https://coder.example.com", ApiToken: token, Persist: persist,
		Headers: []*vpnpb.StartRequest_Header{{Name: "X-Secret", Value: "header-secret-value"}},
	}}}
}

var (
	stopMsg   = &vpnpb.ClientMessage{Msg: &vpnpb.ClientMessage_Stop{Stop: &vpnpb.StopRequest{}}}
	statusMsg = &vpnpb.ClientMessage{Msg: &vpnpb.ClientMessage_Status{Status: &vpnpb.StatusRequest{}}}
)

// waitStatus reads tc's broadcasts until one satisfies cond.
func (tc *testClient) waitStatus(t *testing.T, what string, cond func(*vpnpb.Status) bool) *vpnpb.Status {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case st := <-tc.statuses:
			if cond(st) {
				return st
			}
		case <-deadline:
			t.Fatalf("timed out waiting for a Status with %s", what)
		}
	}
}

// waitFor polls cond until it holds or the test times out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}
