package manager

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pair connects a Session with cfg to a bare tunnel speaker whose requests
// go to onReq (on its own goroutine). Both end with the test.
func pair(t *testing.T, cfg Config, onReq func(*speaker.Tunnel, *vpnpb.ManagerMessage)) (*Session, *speaker.Tunnel) {
	t.Helper()
	tunR, mgrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	mgrR, tunW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	var tun *speaker.Tunnel
	var wg sync.WaitGroup
	ready := make(chan struct{})
	tch := make(chan error, 1)
	go func() {
		var err error
		tun, err = speaker.NewTunnel(ctx, tunR, tunW, speaker.Options[*vpnpb.ManagerMessage]{
			OnRequest: func(req *vpnpb.ManagerMessage) {
				if onReq != nil {
					wg.Go(func() { <-ready; onReq(tun, req) })
				}
			},
		})
		tch <- err
	}()
	sess, err := Connect(ctx, mgrR, mgrW, cfg)
	if terr := <-tch; err != nil || terr != nil {
		t.Fatalf("handshake: manager %v, tunnel %v", err, terr)
	}
	close(ready)
	t.Cleanup(func() {
		_ = sess.Close()
		_ = tun.Close()
		wg.Wait()
	})
	return sess, tun
}

func settingsCall(ctx context.Context, tun *speaker.Tunnel, mtu uint32) (*vpnpb.ManagerMessage, error) {
	return tun.Call(ctx, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_NetworkSettings{
		NetworkSettings: &vpnpb.NetworkSettingsRequest{Mtu: mtu},
	}})
}

func logMsg(text string) *vpnpb.TunnelMessage {
	return &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Log{Log: &vpnpb.Log{Message: text}}}
}

// events records what the worker did, in order.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, s)
}

func (e *events) list() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.got, " ")
}

// A settings request is applied on the worker, and what the tunnel sent
// after it waits until it is applied: the host sees the session in order.
func TestSessionHandlesInOrder(t *testing.T) {
	ctx := testCtx(t)
	var ev events
	applying, release := make(chan struct{}), make(chan struct{})
	sess, tun := pair(t, Config{
		Settings: ApplierFunc(func(_ context.Context, req *vpnpb.NetworkSettingsRequest) error {
			close(applying)
			<-release
			ev.add("applied")
			return errors.New("refused on purpose")
		}),
		OnLog:        func(l *vpnpb.Log) { ev.add("log:" + l.GetMessage()) },
		OnPeerUpdate: func(*vpnpb.PeerUpdate) { ev.add("peers") },
	}, nil)
	if err := tun.Send(logMsg("first")); err != nil {
		t.Fatal(err)
	}
	reply := make(chan *vpnpb.ManagerMessage, 1)
	go func() {
		r, err := settingsCall(ctx, tun, 1280)
		if err != nil {
			t.Error(err)
		}
		reply <- r
	}()
	<-applying
	if err := tun.Send(logMsg("after")); err != nil {
		t.Fatal(err)
	}
	if err := tun.Send(&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_PeerUpdate{PeerUpdate: &vpnpb.PeerUpdate{}}}); err != nil {
		t.Fatal(err)
	}
	if got := ev.list(); got != "log:first" {
		t.Fatalf("while the settings were being applied the worker did %q, want only the first log", got)
	}
	close(release)
	if r := <-reply; r.GetNetworkSettings().GetSuccess() || r.GetNetworkSettings().GetErrorMessage() != "refused on purpose" {
		t.Errorf("settings reply %v, want the applier's refusal", r)
	}
	if err := tun.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Done():
	case <-ctx.Done():
		t.Fatal("the session did not end after the tunnel closed")
	}
	if got, want := ev.list(), "log:first applied log:after peers"; got != want {
		t.Errorf("handled %q, want %q", got, want)
	}
}

// A reply is returned only once what the tunnel sent before it has been
// handled: after Start, the settings it needed are applied and its logs
// delivered. Here the worker is held in the applier while the tunnel
// sends a log and the StartResponse behind the settings request.
func TestSessionCallCatchesUp(t *testing.T) {
	ctx := testCtx(t)
	var ev events
	applying, release, replied := make(chan struct{}), make(chan struct{}), make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	sess, _ := pair(t, Config{
		Settings: ApplierFunc(func(context.Context, *vpnpb.NetworkSettingsRequest) error {
			close(applying)
			<-release
			ev.add("applied")
			return nil
		}),
		OnLog: func(l *vpnpb.Log) { ev.add("log:" + l.GetMessage()) },
	}, func(tun *speaker.Tunnel, req *vpnpb.ManagerMessage) {
		go func() { _, _ = settingsCall(ctx, tun, 1280) }() // answered once released
		<-applying
		_ = tun.Send(logMsg("one"))
		_ = tun.Reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Start{Start: &vpnpb.StartResponse{Success: true}}})
		close(replied)
	})
	type result struct {
		resp *vpnpb.StartResponse
		err  error
		seen string // what the worker had handled when Start returned
	}
	returned := make(chan result, 1)
	t.Cleanup(releaseOnce) // registered after pair's: runs before the session closes
	go func() {
		resp, err := sess.Start(ctx, &vpnpb.StartRequest{})
		returned <- result{resp, err, ev.list()}
	}()
	<-replied
	// The StartResponse is on its way; it must not be returned while the
	// settings before it are still being applied. (A broken session would
	// return within this bound; a correct one waits for release.)
	select {
	case r := <-returned:
		t.Fatalf("Start returned %v, %v while the settings before its reply were being applied", r.resp, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	releaseOnce()
	r := <-returned
	if r.err != nil || !r.resp.GetSuccess() {
		t.Fatalf("Start = %v, %v", r.resp, r.err)
	}
	if want := "applied log:one"; r.seen != want {
		t.Fatalf("when Start returned the worker had handled %q, want %q", r.seen, want)
	}
}

// What a manager does not accept is reported and answered by nothing; an
// applier that returns ErrNoAnswer leaves the tunnel's call to its timeout.
func TestSessionViolationsAndNoAnswer(t *testing.T) {
	ctx := testCtx(t)
	violations := make(chan error, 4)
	_, tun := pair(t, Config{
		Settings:    ApplierFunc(func(context.Context, *vpnpb.NetworkSettingsRequest) error { return ErrNoAnswer }),
		OnViolation: func(err error) { violations <- err },
	}, nil)
	if err := tun.Send(&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Start{Start: &vpnpb.StartResponse{}}}); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := tun.Call(short, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Stop{Stop: &vpnpb.StopResponse{}}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a Stop request from the tunnel: err = %v, want no answer", err)
	}
	short2, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	if _, err := settingsCall(short2, tun, 1280); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("settings left unanswered: err = %v, want the call's deadline", err)
	}
	for _, want := range []string{"one-way *vpnpb.TunnelMessage_Start", "*vpnpb.TunnelMessage_Stop request (msg_id 1)"} {
		select {
		case err := <-violations:
			if !strings.Contains(err.Error(), want) {
				t.Errorf("violation %q, want one mentioning %q", err, want)
			}
		case <-ctx.Done():
			t.Fatalf("no violation for %q", want)
		}
	}
}

func TestConnectNeedsSettings(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Connect(testCtx(t), r, w, Config{}); err == nil || !strings.Contains(err.Error(), "Settings is nil") {
		t.Fatalf("Connect without an applier: err = %v", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Connect did not close the write end it owns: %v", err)
	}
}
