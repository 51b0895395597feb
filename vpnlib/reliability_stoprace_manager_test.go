package vpnlib_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	vpnpb "github.com/codervpn/codervpn/proto"
)

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
