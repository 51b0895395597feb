package service

import (
	"bytes"
	"encoding/binary"
	"net"
	"strings"
	"testing"

	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
)

// TestStalledClientIsDropped: a client that stops reading while large
// Statuses keep coming is dropped after StallTimeout; the tunnel and a
// client that reads are untouched.
func TestStalledClientIsDropped(t *testing.T) {
	t.Parallel()
	be := newFakeBackend()
	ts := startService(t, be, "")
	good := dialClient(t, ts.sock)
	good.call(t, startMsg("secret-token-11", false))
	stalled, err := net.Dial("unix", ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := stalled.Write([]byte("codervpn client 1.1\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stalled client to be in", func() bool { return ts.srv.Clients() == 2 })
	be.mu.Lock()
	ev := be.events
	be.mu.Unlock()
	// 20 000 agents: a Status of about 5 MB, far more than the socket
	// buffers hold, so the service's write to the stalled client blocks.
	for i := range 40 {
		u := &vpnpb.PeerUpdate{}
		for j := range 500 {
			id := make([]byte, 16)
			binary.BigEndian.PutUint64(id, uint64(i*500+j+1))
			u.UpsertedAgents = append(u.UpsertedAgents, &vpnpb.Agent{Id: id, Name: strings.Repeat("a", 100),
				WorkspaceId: bytes.Repeat([]byte{1}, 16), Fqdn: []string{strings.Repeat("f", 100)}})
		}
		ev.PeerUpdate(u)
	}
	waitFor(t, "the stalled client to be dropped", func() bool { return ts.srv.Clients() == 1 })
	if st := good.call(t, statusMsg).GetStatus(); st.GetLifecycle() != vpnpb.Status_STARTED {
		t.Fatalf("the reading client got %v", st.GetLifecycle())
	}
	if be.Running().Stopped() {
		t.Fatal("dropping a client stopped the tunnel")
	}
}

// TestNoFDLeft: a service with clients that come and go, a tunnel started
// and stopped, and a refused client, leaves no socket open once closed.
// Not parallel: it counts the process's sockets.
func TestNoFDLeft(t *testing.T) {
	before := fdtest.Take(t)
	func() {
		ts := startService(t, newFakeBackend(), "")
		for range 3 {
			c := dialClient(t, ts.sock)
			c.call(t, startMsg("secret-token-10", false))
			c.call(t, stopMsg)
			_ = c.sp.Close()
		}
		if err := ts.srv.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	// The cleanups of startService and dialClient run at the end of the
	// test; everything they close is closed already.
	before.WaitClosed(t, fdtest.Sockets, testTimeout, "the service")
}
