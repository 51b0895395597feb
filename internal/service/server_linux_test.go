package service

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

func TestStartStatusStop(t *testing.T) {
	t.Parallel()
	ts := startService(t, newFakeBackend(), "")
	a, b := dialClient(t, ts.sock), dialClient(t, ts.sock)
	waitFor(t, "two clients", func() bool { return ts.srv.Clients() == 2 })

	resp := a.call(t, startMsg("secret-token-1", true))
	if !resp.GetStart().GetSuccess() {
		t.Fatalf("Start = %v", resp)
	}
	starts := ts.be.Starts()
	if len(starts) != 1 || starts[0].GetApiToken() != "secret-token-1" || starts[0].GetPersist() {
		t.Fatalf("the tunnel got %v; want the token and persist cleared", starts)
	}
	// Both clients see the same STARTED Status with the agent.
	for name, c := range map[string]*testClient{"a": a, "b": b} {
		st := c.waitStatus(t, "STARTED and an agent", func(s *vpnpb.Status) bool {
			return s.GetLifecycle() == vpnpb.Status_STARTED && len(s.GetPeerUpdate().GetUpsertedAgents()) == 1
		})
		if st.GetPeerUpdate().GetUpsertedAgents()[0].GetName() != "main" {
			t.Fatalf("client %s: %v", name, st)
		}
	}
	select {
	case p := <-a.progress:
		if p.GetStage() != vpnpb.StartProgressStage_Initializing {
			t.Fatalf("progress %v", p)
		}
	default:
		t.Fatal("no StartProgress broadcast before the StartResponse")
	}
	if st := b.call(t, statusMsg).GetStatus(); st.GetLifecycle() != vpnpb.Status_STARTED {
		t.Fatalf("StatusRequest = %v", st)
	}
	if r := b.call(t, stopMsg); !r.GetStop().GetSuccess() {
		t.Fatalf("Stop = %v", r)
	}
	if !ts.be.Running().Stopped() {
		t.Fatal("Stop did not stop the tunnel")
	}
	a.waitStatus(t, "STOPPED", func(s *vpnpb.Status) bool { return s.GetLifecycle() == vpnpb.Status_STOPPED })
}

// TestSecretsStayInside: the token and header values never appear in a
// Status, a StartResponse or the service's log, even when the backend's
// error quotes them.
func TestSecretsStayInside(t *testing.T) {
	t.Parallel()
	be := newFakeBackend()
	be.fail = errors.New("deployment said: bad token secret-token-2 with header header-secret-value")
	ts := startService(t, be, "")
	c := dialClient(t, ts.sock)
	resp := c.call(t, startMsg("secret-token-2", false))
	msg := resp.GetStart().GetErrorMessage()
	if resp.GetStart().GetSuccess() || !strings.Contains(msg, "<redacted>") {
		t.Fatalf("StartResponse = %v, want a failure with the secrets redacted", resp)
	}
	st := c.call(t, statusMsg).GetStatus()
	for what, s := range map[string]string{"StartResponse": msg, "Status": st.String(), "log": ts.logs.String()} {
		if strings.Contains(s, "secret-token-2") || strings.Contains(s, "header-secret-value") {
			t.Errorf("%s holds a secret: %s", what, s)
		}
	}
	if !strings.Contains(st.GetErrorMessage(), "bad token") {
		t.Errorf("Status error %q does not carry the reason", st.GetErrorMessage())
	}
}

// TestPersistedLogin: only `up --persist` writes login.json (0600); a new
// service reconnects with it; Stop deletes it and the next service stays
// down.
func TestPersistedLogin(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	file := filepath.Join(state, loginFile)
	be1 := newFakeBackend()
	ts := startService(t, be1, state)
	c := dialClient(t, ts.sock)
	c.call(t, startMsg("secret-token-3", false))
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("a Start without persist wrote %s (%v)", file, err)
	}
	c.call(t, startMsg("secret-token-3", true))
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("login.json after persist: %v, %v; want mode 0600", st, err)
	}
	if data, _ := os.ReadFile(file); !strings.Contains(string(data), "secret-token-3") {
		t.Fatalf("login.json = %s", data)
	}

	// A second service (the first one crashed) reconnects by itself.
	be2 := newFakeBackend()
	startService(t, be2, state)
	waitFor(t, "the reconnect", func() bool { return len(be2.Starts()) == 1 })
	if got := be2.Starts()[0].GetApiToken(); got != "secret-token-3" {
		t.Fatalf("reconnected with token %q", got)
	}

	c.call(t, stopMsg)
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("Stop left %s (%v)", file, err)
	}
	be3 := newFakeBackend()
	ts3 := startService(t, be3, state)
	dialClient(t, ts3.sock).call(t, statusMsg) // the service is up and answering
	if n := len(be3.Starts()); n != 0 {
		t.Fatalf("after down a new service started the tunnel %d times", n)
	}
}

// TestBadClientsLeaveOthersAlone: garbage, a 4 GiB frame, an empty frame,
// a client that hangs up mid-Start, one that floods and one that stops
// reading are dropped; the tunnel keeps running and a well-behaved client
// keeps getting answers.
func TestBadClientsLeaveOthersAlone(t *testing.T) {
	t.Parallel()
	be := newFakeBackend()
	ts := startService(t, be, "")
	good := dialClient(t, ts.sock)
	good.call(t, startMsg("secret-token-4", false))
	running := be.Running()

	raw := func(payload []byte) {
		conn, err := net.Dial("unix", ts.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go func() { _, _ = io.Copy(io.Discard, conn) }()
		_, _ = conn.Write(append([]byte("codervpn client 1.1\n"), payload...))
		// The service ends the session: our read side sees EOF.
		buf := make([]byte, 1)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
		}
	}
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, 0xffffffff)
	tests := []struct {
		name    string
		payload []byte
	}{
		{name: "garbage", payload: []byte("\x00\x00\x00\x05hello")},
		{name: "4 GiB frame", payload: huge},
		{name: "empty frame", payload: []byte{0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { raw(tt.payload) })
	}

	// Hang up mid-Start: the Start completes anyway.
	be.mu.Lock()
	be.block = make(chan struct{})
	be.mu.Unlock()
	quitter := dialClient(t, ts.sock)
	qctx, qcancel := context.WithCancel(context.Background())
	defer qcancel()
	go func() { _, _ = quitter.sp.Call(qctx, startMsg("secret-token-5", false)) }()
	<-be.started // the first Start
	<-be.started // the quitter's
	_ = quitter.sp.Close()
	be.mu.Lock()
	close(be.block)
	be.block = nil
	be.mu.Unlock()
	good.waitStatus(t, "STARTED again", func(s *vpnpb.Status) bool { return s.GetLifecycle() == vpnpb.Status_STARTED })

	// Flood: a client that sends requests without end and reads none of
	// the answers.
	flood, err := net.Dial("unix", ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	var burst []byte
	for id := uint64(1); id <= 20000; id++ {
		b, _ := proto.Marshal(&vpnpb.ClientMessage{Rpc: &vpnpb.RPC{MsgId: id}, Msg: statusMsg.Msg})
		burst = binary.BigEndian.AppendUint32(burst, uint32(len(b)))
		burst = append(burst, b...)
	}
	go func() {
		_, _ = flood.Write(append([]byte("codervpn client 1.1\n"), burst...))
		_, _ = flood.Write(burst) // fails once the service hung up
	}()
	waitFor(t, "the flooding and the quitting clients to be dropped", func() bool { return ts.srv.Clients() == 1 })

	if st := good.call(t, statusMsg).GetStatus(); st.GetLifecycle() != vpnpb.Status_STARTED {
		t.Fatalf("the good client got %v", st)
	}
	if running.Stopped() && be.Running() == running {
		t.Fatal("a bad client stopped the tunnel")
	}
	if strings.Contains(ts.logs.String(), "secret-token") {
		t.Fatal("the log holds a token")
	}
}

// TestRefusedClientReadsTheReason: an outsider gets the one line naming
// the group, not a broken pipe.
func TestRefusedClientReadsTheReason(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "s.sock")
	g := Group{Name: "codervpn", GID: os.Getgid()}
	l, err := Listen(sock, g)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Config{Backend: newFakeBackend(), Group: g, CheckPeer: func(net.Conn, Group) error {
		return refusal(4242, Group{Name: "codervpn"})
	}})
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "codervpn client 1.1\n"); err != nil {
		t.Fatal(err)
	}
	line, _ := io.ReadAll(conn)
	want := RefusalPrefix + "user 4242 is not in group codervpn; an administrator can run `sudo usermod -aG codervpn 4242`"
	if !strings.HasPrefix(string(line), want) {
		t.Fatalf("refused client read %q, want %q…", line, want)
	}
}

func TestListenReplacesOnlyStaleSockets(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "run", "s.sock")
	g := Group{Name: "g", GID: os.Getgid()}
	l, err := Listen(sock, g)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(sock); st.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, want 0660", st.Mode().Perm())
	}
	if _, err := Listen(sock, g); err == nil || !strings.Contains(err.Error(), "another codervpn service is listening") {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	// A crash leaves the file behind.
	l.SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen(sock, g)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l2.Close()
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(sock, g); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
}

// TestWakeReachesTheTunnel: Server.Wake (what a resume from sleep calls)
// is a WakeRequest to the running tunnel, and a no-op without one.
func TestWakeReachesTheTunnel(t *testing.T) {
	t.Parallel()
	be := newFakeBackend()
	ts := startService(t, be, "")
	if err := ts.srv.Wake(); err != nil {
		t.Fatalf("Wake with no tunnel: %v", err)
	}
	dialClient(t, ts.sock).call(t, startMsg("secret-token-6", false))
	if err := ts.srv.Wake(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-be.Running().wakes:
	default:
		t.Fatal("the tunnel got no WakeRequest")
	}
}

// TestTunnelEndedReconnects: a tunnel that dies by itself is reported
// (STOPPED with the reason) and started again with the kept login.
func TestTunnelEndedReconnects(t *testing.T) {
	t.Parallel()
	be := newFakeBackend()
	ts := startService(t, be, "")
	c := dialClient(t, ts.sock)
	c.call(t, startMsg("secret-token-7", false))
	first := be.Running()
	first.once.Do(func() { close(first.done) }) // it dies
	c.waitStatus(t, "STOPPED with the reason", func(s *vpnpb.Status) bool {
		return s.GetLifecycle() == vpnpb.Status_STOPPED && strings.Contains(s.GetErrorMessage(), "fake tunnel died")
	})
	waitFor(t, "the reconnect", func() bool { return len(be.Starts()) == 2 })
	if tok := be.Starts()[1].GetApiToken(); tok != "secret-token-7" {
		t.Fatalf("reconnected with %q", tok)
	}
	c.waitStatus(t, "STARTED again", func(s *vpnpb.Status) bool { return s.GetLifecycle() == vpnpb.Status_STARTED })
}

// TestUpTwiceKeepsTheTunnel: a second Start with the same login is
// answered at once without touching the tunnel; another login replaces it.
func TestUpTwiceKeepsTheTunnel(t *testing.T) {
	t.Parallel()
	be := newFakeBackend()
	ts := startService(t, be, "")
	a, b := dialClient(t, ts.sock), dialClient(t, ts.sock)
	a.call(t, startMsg("secret-token-8", false))
	first := be.Running()
	if r := b.call(t, startMsg("secret-token-8", false)); !r.GetStart().GetSuccess() {
		t.Fatalf("second Start = %v", r)
	}
	if n := len(be.Starts()); n != 1 || first.Stopped() {
		t.Fatalf("the same login started the tunnel %d times (first stopped: %v)", n, first.Stopped())
	}
	b.call(t, startMsg("secret-token-9", false))
	if n := len(be.Starts()); n != 2 || !first.Stopped() {
		t.Fatalf("another login: %d starts, first stopped %v; want 2 and true", n, first.Stopped())
	}
}
