package vpnlib_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tailscale/wireguard-go/tun"
	"google.golang.org/protobuf/proto"
	"tailscale.com/wgengine/router"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/tailnet"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// stopRaceRuns is how many times each Stop race runs: a few in `make unit`,
// as many as CODERVPN_STOPRACE_N says when hunting for a rare interleaving
// (the README's Reliability table records a run of 1,000 each under -race).
func stopRaceRuns(t *testing.T) int {
	t.Helper()
	s := os.Getenv("CODERVPN_STOPRACE_N")
	if s == "" {
		return 10
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("CODERVPN_STOPRACE_N=%q: want a positive number of runs per case", s)
	}
	return n
}

// TestStopRaces sends a StopRequest while the tunnel is busy with something
// else, many times, against the embedded deployment and an engine that
// keeps the tunnel busy on cue. Each run must end the same way: every
// request the manager sent before the Stop answered exactly once, the
// StopResponse the last frame, then a clean end of stream; no panic, no
// call into an engine after it closed, nothing left running.
func TestStopRaces(t *testing.T) {
	cases := []struct {
		name string
		busy raceBusy
		// stop sends the Stop (and whatever goes with it) once the tunnel
		// is busy; it returns the ids of the requests owed an answer.
		stop func(m *raceManager, e *raceEngine, run int) []uint64
	}{
		{name: "log storm", busy: raceBusy{logs: true},
			stop: func(m *raceManager, _ *raceEngine, _ int) []uint64 {
				m.waitFor(func(s raceSeen) bool { return s.logsAfterStart >= 20 }, "a storm of Log messages")
				return m.send(stopMsg())
			}},
		{name: "peer update storm", busy: raceBusy{},
			stop: func(m *raceManager, _ *raceEngine, run int) []uint64 {
				m.waitFor(func(s raceSeen) bool { return s.peerUpdates >= 1 }, "a PeerUpdate")
				// GetPeerUpdates pipelined ahead of the Stop, in one write:
				// the tunnel reads them all before the Stop.
				msgs := make([]*vpnpb.ManagerMessage, 0, 9)
				for range 1 + run%8 {
					msgs = append(msgs, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}})
				}
				return m.send(append(msgs, stopMsg())...)
			}},
		{name: "network settings in flight", busy: raceBusy{settings: true},
			stop: func(m *raceManager, _ *raceEngine, _ int) []uint64 {
				m.waitFor(func(s raceSeen) bool { return s.heldSettings >= 1 }, "a NetworkSettingsRequest held unanswered")
				return m.send(stopMsg())
			}},
		{name: "wake being handled", busy: raceBusy{},
			stop: func(m *raceManager, e *raceEngine, run int) []uint64 {
				wake := &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Wake{Wake: &vpnpb.WakeRequest{}}}
				if run%2 == 0 {
					return m.send(wake, stopMsg()) // one write: the Stop right behind the Wake
				}
				owed := m.send(wake)
				e.waitRebinding(m)
				return append(owed, m.send(stopMsg())...)
			}},
	}
	runs := stopRaceRuns(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			d := vpntest.New(t, vpntest.Options{})
			if tc.name == "peer update storm" {
				churnWorkspaces(t, d)
			}
			began := time.Now()
			for run := range runs {
				if t.Failed() {
					return
				}
				runStopRace(t, d, tc.busy, run, tc.stop)
				if (run+1)%100 == 0 && run+1 < runs {
					t.Logf("%d runs after %v", run+1, time.Since(began).Round(time.Second))
				}
			}
			t.Logf("%d runs in %v", runs, time.Since(began).Round(time.Second))
		})
	}
}

// churnWorkspaces changes a workspace's status on the deployment until the
// test ends, so that every tunnel started meanwhile gets a stream of
// workspace updates and sends the manager PeerUpdates.
func churnWorkspaces(t *testing.T, d *vpntest.Deployment) {
	t.Helper()
	ws, err := d.AddWorkspace("churn", codersdk.WorkspaceStatusRunning)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); wg.Wait() })
	wg.Go(func() {
		ticker := time.NewTicker(2 * time.Millisecond) // a load, not a wait
		defer ticker.Stop()
		statuses := []codersdk.WorkspaceStatus{codersdk.WorkspaceStatusStopping, codersdk.WorkspaceStatusStopped,
			codersdk.WorkspaceStatusStarting, codersdk.WorkspaceStatusRunning}
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-ticker.C:
			}
			_ = d.SetWorkspaceStatus(ws.ID, statuses[i%len(statuses)])
		}
	})
}

// runStopRace is one run: a tunnel on fresh pipes, started against d,
// busied, stopped, and checked.
func runStopRace(t *testing.T, d *vpntest.Deployment, busy raceBusy, run int,
	stop func(*raceManager, *raceEngine, int) []uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tunR, tunW, mgrR, mgrW := vpnlib.RPCPipes(t)
	defer mgrR.Close()
	defer mgrW.Close()
	engine := &raceEngine{busy: busy, rebinding: make(chan struct{}, 1)}
	cfg := vpnlib.TunnelConfig{
		TunFD: 0, RPCRead: tunR, RPCWrite: tunW, // fd 0 is never touched: OpenTun below
		PingInterval: 5 * time.Millisecond,
		OpenTun:      func(int) (tun.Device, error) { return newNullDevice(), nil },
	}
	vpnlib.SetEngine(&cfg, engine.start)
	tunnel, err := vpnlib.NewTunnel(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tunnel.Close()
	m := newRaceManager(ctx, t, mgrR, mgrW, busy.settings)
	owed := m.send(&vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{Start: &vpnpb.StartRequest{
		CoderUrl: d.URL.String(), ApiToken: d.Token,
	}}})
	m.waitFor(func(s raceSeen) bool { return s.started }, "the StartResponse")
	if st := m.replyTo(owed[0]).GetStart(); !st.GetSuccess() {
		t.Fatalf("run %d: Start failed: %v", run, st)
	}
	stopOwed := stop(m, engine, run)
	stopID := stopOwed[len(stopOwed)-1]
	owed = append(owed, stopOwed...)

	end := m.waitEnd()
	if !errors.Is(end, io.EOF) {
		t.Errorf("run %d: the stream ended with %v, want a clean end of file after the StopResponse", run, end)
	}
	frames := m.framesSeen()
	if len(frames) == 0 || frames[len(frames)-1].GetRpc().GetResponseTo() != stopID || frames[len(frames)-1].GetStop() == nil {
		last := "nothing"
		if len(frames) > 0 {
			last = frameKind(frames[len(frames)-1])
		}
		t.Errorf("run %d: the last frame was %s, want the StopResponse to request %d", run, last, stopID)
	} else if !frames[len(frames)-1].GetStop().GetSuccess() {
		t.Errorf("run %d: StopResponse %v", run, frames[len(frames)-1].GetStop())
	}
	answers := map[uint64]int{}
	for _, f := range frames {
		if to := f.GetRpc().GetResponseTo(); to != 0 {
			answers[to]++
		}
	}
	for _, id := range owed {
		if answers[id] != 1 {
			t.Errorf("run %d: request %d (%s) answered %d times before the end, want once",
				run, id, m.kindOf(id), answers[id])
		}
	}
	select {
	case <-tunnel.Done():
	case <-ctx.Done():
		t.Fatalf("run %d: the tunnel did not end after its StopResponse", run)
	}
	if err := tunnel.Err(); err != nil {
		t.Errorf("run %d: tunnel Err after a clean stop: %v", run, err)
	}
	for _, v := range engine.problems() {
		t.Errorf("run %d: %s", run, v)
	}
}

// raceSeen is what the manager has read so far.
type raceSeen struct {
	started        bool
	logsAfterStart int
	peerUpdates    int
	heldSettings   int
}

// raceManager plays the manager with raw frames: it answers every
// NetworkSettingsRequest until the StartResponse and, when hold is set,
// none after it, records every frame, and notes how the stream ended.
type raceManager struct {
	t    *testing.T
	ctx  context.Context
	hold bool

	wmu    sync.Mutex // one writer at a time on w
	w      *os.File
	nextID uint64
	kinds  map[uint64]string

	mu      sync.Mutex
	frames  []*vpnpb.TunnelMessage
	seen    raceSeen
	changed chan struct{}
	ended   chan error
}

func newRaceManager(ctx context.Context, t *testing.T, r, w *os.File, hold bool) *raceManager {
	t.Helper()
	m := &raceManager{t: t, ctx: ctx, hold: hold, w: w, kinds: map[uint64]string{},
		changed: make(chan struct{}, 1), ended: make(chan error, 1)}
	if _, err := io.WriteString(w, "codervpn manager 1.3\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(r)
	if line, err := br.ReadString('\n'); err != nil || line != "codervpn tunnel 1.3\n" {
		t.Fatalf("tunnel header %q, %v", line, err)
	}
	go m.read(br)
	return m
}

func (m *raceManager) read(br *bufio.Reader) {
	answered := 0
	for {
		f, err := readFrame(br)
		if err != nil {
			m.ended <- err
			m.notify()
			return
		}
		m.mu.Lock()
		m.frames = append(m.frames, f)
		switch {
		case f.GetStart() != nil:
			m.seen.started = true
		case f.GetLog() != nil && m.seen.started:
			m.seen.logsAfterStart++
		case f.GetPeerUpdate() != nil && f.GetRpc().GetResponseTo() == 0:
			m.seen.peerUpdates++
		}
		settings := f.GetNetworkSettings() != nil && f.GetRpc().GetMsgId() != 0
		if settings && m.hold && m.seen.started && answered >= 1 {
			m.seen.heldSettings++
			settings = false
		}
		m.mu.Unlock()
		if settings {
			answered++
			m.write(&vpnpb.ManagerMessage{
				Rpc: &vpnpb.RPC{ResponseTo: f.GetRpc().GetMsgId()},
				Msg: &vpnpb.ManagerMessage_NetworkSettings{NetworkSettings: &vpnpb.NetworkSettingsResponse{Success: true}},
			})
		}
		m.notify()
	}
}

func (m *raceManager) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// send numbers the requests and writes them in one write; it returns their ids.
func (m *raceManager) send(msgs ...*vpnpb.ManagerMessage) []uint64 {
	m.t.Helper()
	m.wmu.Lock()
	ids := make([]uint64, len(msgs))
	for i, msg := range msgs {
		m.nextID++
		ids[i] = m.nextID
		msg.Rpc = &vpnpb.RPC{MsgId: m.nextID}
		m.kinds[m.nextID] = fmt.Sprintf("%T", msg.GetMsg())
	}
	m.wmu.Unlock()
	m.write(msgs...)
	return ids
}

func (m *raceManager) write(msgs ...*vpnpb.ManagerMessage) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	var buf []byte
	for _, msg := range msgs {
		buf = appendFrame(m.t, buf, msg)
	}
	if _, err := m.w.Write(buf); err != nil {
		m.t.Errorf("the manager's write failed: %v", err)
	}
}

func (m *raceManager) kindOf(id uint64) string {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	return m.kinds[id]
}

// waitFor waits until cond holds for what the manager has read.
func (m *raceManager) waitFor(cond func(raceSeen) bool, what string) {
	m.t.Helper()
	for {
		m.mu.Lock()
		ok := cond(m.seen)
		m.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-m.changed:
		case err := <-m.ended:
			m.ended <- err
			m.t.Fatalf("the stream ended (%v) while waiting for %s", err, what)
		case <-m.ctx.Done():
			m.t.Fatalf("no %s within %s", what, testTimeout)
		}
	}
}

func (m *raceManager) waitEnd() error {
	m.t.Helper()
	select {
	case err := <-m.ended:
		m.ended <- err
		return err
	case <-m.ctx.Done():
		m.t.Fatalf("the tunnel did not close its side within %s of the Stop", testTimeout)
		return nil
	}
}

func (m *raceManager) framesSeen() []*vpnpb.TunnelMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*vpnpb.TunnelMessage(nil), m.frames...)
}

func (m *raceManager) replyTo(id uint64) *vpnpb.TunnelMessage {
	for _, f := range m.framesSeen() {
		if f.GetRpc().GetResponseTo() == id {
			return f
		}
	}
	return nil
}

// raceBusy says what the engine keeps doing while it runs.
type raceBusy struct {
	logs     bool // log as fast as it can
	settings bool // push new router settings, one after another
}

// raceEngine is fakeEngine kept busy: it logs, pushes settings, and takes a
// moment over each Rebind; it notes any call made into it after Close.
type raceEngine struct {
	*fakeEngine
	busy      raceBusy
	rebinding chan struct{} // a Rebind has begun

	stop   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool

	mu   sync.Mutex
	errs []string
}

func (e *raceEngine) start(opts *tailnet.Options) (vpnlib.Engine, error) {
	inner, err := startFakeEngine(&steps{})(opts)
	if err != nil {
		return nil, err
	}
	e.fakeEngine = inner.(*fakeEngine)
	e.stop = make(chan struct{})
	if e.busy.logs {
		e.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-e.stop:
					return
				default:
				}
				opts.Logger.Info(context.Background(), "engine log storm", slog.F("i", i))
			}
		})
	}
	if e.busy.settings {
		e.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-e.stop:
					return
				default:
				}
				routes := []netip.Prefix{tailnet.CoderServicePrefix.AsNetip()}
				if i%2 == 1 {
					routes = append(routes, raceExtraRoute)
				}
				// Blocks until the host answers or the tunnel shuts its
				// settings down.
				_ = opts.Router.Set(&router.Config{LocalAddrs: opts.Addresses, Routes: routes})
			}
		})
	}
	return e, nil
}

func (e *raceEngine) note(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, fmt.Sprintf(format, args...))
}

func (e *raceEngine) problems() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.errs...)
}

// Rebind takes a moment, as the real one does (new sockets, a STUN).
func (e *raceEngine) Rebind() {
	if e.closed.Load() {
		e.note("Rebind on a closed engine")
	}
	select {
	case e.rebinding <- struct{}{}:
	default:
	}
	deadline := time.Now().Add(time.Millisecond)
	for time.Now().Before(deadline) && !e.closed.Load() {
		select {
		case <-e.stop:
			return
		default:
		}
	}
}

func (e *raceEngine) waitRebinding(m *raceManager) {
	m.t.Helper()
	select {
	case <-e.rebinding:
	case <-m.ctx.Done():
		m.t.Fatal("the Wake never reached the engine's Rebind")
	}
}

func (e *raceEngine) Close() error {
	if e.closed.Swap(true) {
		e.note("the engine closed twice")
	}
	close(e.stop)
	e.wg.Wait()
	return e.fakeEngine.Close()
}

// raceExtraRoute is a second route the busy engine adds and removes.
var raceExtraRoute = netip.MustParsePrefix("fd60:627a:a42b:1::/64")

// appendFrame appends msg as one CoderVPN frame.
func appendFrame(t *testing.T, buf []byte, msg *vpnpb.ManagerMessage) []byte {
	t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(b)))
	return append(buf, b...)
}

// nullDevice is a tunnel device that carries nothing: the busy engine
// never reads or writes it, and Close ends its event channel.
type nullDevice struct {
	events chan tun.Event
	once   sync.Once
}

func newNullDevice() *nullDevice { return &nullDevice{events: make(chan tun.Event)} }

func (*nullDevice) File() *os.File                         { return nil }
func (*nullDevice) Read([][]byte, []int, int) (int, error) { return 0, os.ErrClosed }
func (*nullDevice) Write(b [][]byte, _ int) (int, error)   { return len(b), nil }
func (*nullDevice) MTU() (int, error)                      { return 1280, nil }
func (*nullDevice) Name() (string, error)                  { return "null", nil }
func (d *nullDevice) Events() <-chan tun.Event             { return d.events }
func (*nullDevice) BatchSize() int                         { return 1 }
func (d *nullDevice) Close() error {
	d.once.Do(func() { close(d.events) })
	return nil
}

// readFrame reads one TunnelMessage frame; a clean end between frames is
// exactly io.EOF.
func readFrame(r io.Reader) (*vpnpb.TunnelMessage, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("the stream ended inside a frame: %w", io.ErrUnexpectedEOF)
	}
	m := &vpnpb.TunnelMessage{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("undecodable frame: %w", err)
	}
	return m, nil
}

// frameKind names what m carries.
func frameKind(m *vpnpb.TunnelMessage) string {
	return fmt.Sprintf("%T (response_to %d)", m.GetMsg(), m.GetRpc().GetResponseTo())
}
