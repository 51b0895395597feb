package speaker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// testTimeout bounds every wait in these tests; nothing should come near it.
const testTimeout = 15 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// recv waits for one value from ch, failing the test after testTimeout.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
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

// speakerPair connects one of our ManagerSpeakers to one of our
// TunnelSpeakers over two os.Pipes. Both are closed when the test ends.
func speakerPair(t *testing.T, mopts Options[*vpnpb.TunnelMessage],
	topts Options[*vpnpb.ManagerMessage],
) (*Manager, *Tunnel) {
	t.Helper()
	mEnd, tEnd := newPipePair(t)
	ctx := testContext(t)
	type res struct {
		s   *Tunnel
		err error
	}
	tch := make(chan res, 1)
	go func() {
		s, err := NewTunnel(ctx, tEnd.r, tEnd.w, topts)
		tch <- res{s, err}
	}()
	m, merr := NewManager(ctx, mEnd.r, mEnd.w, mopts)
	tr := <-tch
	if merr != nil || tr.err != nil {
		t.Fatalf("speaker pair: manager %v, tunnel %v", merr, tr.err)
	}
	t.Cleanup(func() {
		_ = m.Close()
		_ = tr.s.Close()
	})
	return m, tr.s
}

// queue collects what a handler receives; handlers must not block, so the
// channel is generously buffered.
func queue[M any]() (chan M, func(M)) {
	ch := make(chan M, 1024)
	return ch, func(m M) { ch <- m }
}

func TestSpeakerCallAndReply(t *testing.T) {
	t.Parallel()
	reqs, onReq := queue[*vpnpb.ManagerMessage]()
	m, tun := speakerPair(t, Options[*vpnpb.TunnelMessage]{},
		Options[*vpnpb.ManagerMessage]{OnRequest: onReq})
	if m.Version() != CurrentVersion || tun.Version() != CurrentVersion {
		t.Fatalf("versions %v/%v, want %v", m.Version(), tun.Version(), CurrentVersion)
	}
	go func() {
		for i := 0; i < 2; i++ {
			req := <-reqs
			_ = tun.Reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_PeerUpdate{PeerUpdate: &vpnpb.PeerUpdate{
				UpsertedWorkspaces: []*vpnpb.Workspace{{Name: fmt.Sprintf("reply-to-%d", req.GetRpc().GetMsgId())}},
			}}})
		}
	}()
	msg := &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}}
	for want := uint64(1); want <= 2; want++ {
		resp, err := m.Call(testContext(t), msg)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetPeerUpdate().GetUpsertedWorkspaces()[0].GetName(); got != fmt.Sprintf("reply-to-%d", want) {
			t.Fatalf("call %d got reply %q: msg ids must count from 1", want, got)
		}
		if resp.GetRpc().GetResponseTo() != want {
			t.Fatalf("reply response_to = %d, want %d", resp.GetRpc().GetResponseTo(), want)
		}
	}
	if msg.Rpc != nil {
		t.Fatalf("Call modified the caller's message: rpc = %v", msg.Rpc)
	}
}

func TestSpeakerDispatch(t *testing.T) {
	t.Parallel()
	reqs, onReq := queue[*vpnpb.TunnelMessage]()
	msgs, onMsg := queue[*vpnpb.TunnelMessage]()
	m, tun := speakerPair(t, Options[*vpnpb.TunnelMessage]{OnRequest: onReq, OnMessage: onMsg},
		Options[*vpnpb.ManagerMessage]{})
	logMsg := &vpnpb.TunnelMessage{
		Rpc: &vpnpb.RPC{MsgId: 99}, // Send ignores any RPC header the caller left on the message
		Msg: &vpnpb.TunnelMessage_Log{Log: &vpnpb.Log{Message: "one-way"}},
	}
	if err := tun.Send(logMsg); err != nil {
		t.Fatal(err)
	}
	got := recv(t, msgs, "one-way log")
	if got.GetLog().GetMessage() != "one-way" || got.GetRpc() != nil {
		t.Fatalf("OnMessage got %v, want the log without an RPC header", got)
	}
	// A request from the tunnel goes to OnRequest.
	callErr := make(chan error, 1)
	go func() {
		_, err := tun.Call(testContext(t), &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_NetworkSettings{
			NetworkSettings: &vpnpb.NetworkSettingsRequest{Mtu: 1280},
		}})
		callErr <- err
	}()
	req := recv(t, reqs, "network settings request")
	if req.GetNetworkSettings().GetMtu() != 1280 || req.GetRpc().GetMsgId() != 1 {
		t.Fatalf("OnRequest got %v", req)
	}
	// Reply to something that is not a request is refused.
	if err := m.Reply(got, &vpnpb.ManagerMessage{}); err == nil || !strings.Contains(err.Error(), "not a request") {
		t.Fatalf("Reply to a one-way message = %v, want refusal", err)
	}
	// A reply nobody waits for is dropped and counted, and the session goes on.
	if err := m.Reply(&vpnpb.TunnelMessage{Rpc: &vpnpb.RPC{MsgId: 4242}}, &vpnpb.ManagerMessage{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Reply(req, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_NetworkSettings{
		NetworkSettings: &vpnpb.NetworkSettingsResponse{Success: true},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, callErr, "call result"); err != nil {
		t.Fatal(err)
	}
	// Frames are handled in order, so the stray reply was seen before the real one.
	if n := tun.DroppedReplies(); n != 1 {
		t.Fatalf("DroppedReplies = %d, want 1", n)
	}
}

func TestSpeakerConcurrentCalls(t *testing.T) {
	t.Parallel()
	const calls = 100
	reqs, onReq := queue[*vpnpb.TunnelMessage]()
	m, tun := speakerPair(t, Options[*vpnpb.TunnelMessage]{OnRequest: onReq},
		Options[*vpnpb.ManagerMessage]{})

	// The manager collects every request, then answers them in random order,
	// each reply naming the MTU of the request it answers.
	go func() {
		var batch []*vpnpb.TunnelMessage
		for len(batch) < calls {
			select {
			case r := <-reqs:
				batch = append(batch, r)
			case <-m.Done():
				return
			}
		}
		rand.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		var wg sync.WaitGroup
		for _, r := range batch {
			wg.Go(func() {
				_ = m.Reply(r, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_NetworkSettings{
					NetworkSettings: &vpnpb.NetworkSettingsResponse{
						ErrorMessage: fmt.Sprint(r.GetNetworkSettings().GetMtu()),
					},
				}})
			})
		}
		wg.Wait()
	}()

	ctx := testContext(t)
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			mtu := uint32(1000 + i)
			resp, err := tun.Call(ctx, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_NetworkSettings{
				NetworkSettings: &vpnpb.NetworkSettingsRequest{Mtu: mtu},
			}})
			if err != nil {
				errs <- err
				return
			}
			if got := resp.GetNetworkSettings().GetErrorMessage(); got != fmt.Sprint(mtu) {
				errs <- fmt.Errorf("call with mtu %d got the reply for %s", mtu, got)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := tun.DroppedReplies(); n != 0 {
		t.Fatalf("DroppedReplies = %d, want 0", n)
	}
}

func TestSpeakerCallCancelAndLateReply(t *testing.T) {
	t.Parallel()
	reqs, onReq := queue[*vpnpb.TunnelMessage]()
	m, tun := speakerPair(t, Options[*vpnpb.TunnelMessage]{OnRequest: onReq},
		Options[*vpnpb.ManagerMessage]{})
	ns := func(mtu uint32) *vpnpb.TunnelMessage {
		return &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_NetworkSettings{NetworkSettings: &vpnpb.NetworkSettingsRequest{Mtu: mtu}}}
	}
	ctx, cancel := context.WithCancel(testContext(t))
	callErr := make(chan error, 1)
	go func() {
		_, err := tun.Call(ctx, ns(1))
		callErr <- err
	}()
	first := recv(t, reqs, "first request")
	cancel()
	err := recv(t, callErr, "cancelled call")
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "msg_id 1") {
		t.Fatalf("cancelled Call = %v, want context.Canceled naming msg_id 1", err)
	}

	// The second call is pending when the late reply to the first arrives;
	// the late reply must not be handed to it.
	second := make(chan *vpnpb.ManagerMessage, 1)
	go func() {
		resp, err := tun.Call(testContext(t), ns(2))
		if err != nil {
			t.Error(err)
		}
		second <- resp
	}()
	secondReq := recv(t, reqs, "second request")
	reply := func(req *vpnpb.TunnelMessage, text string) {
		if err := m.Reply(req, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_NetworkSettings{
			NetworkSettings: &vpnpb.NetworkSettingsResponse{ErrorMessage: text},
		}}); err != nil {
			t.Error(err)
		}
	}
	reply(first, "late")
	reply(secondReq, "second")
	if got := recv(t, second, "second reply").GetNetworkSettings().GetErrorMessage(); got != "second" {
		t.Fatalf("second call got reply %q", got)
	}
	if n := tun.DroppedReplies(); n != 1 {
		t.Fatalf("DroppedReplies = %d, want 1 (the late reply)", n)
	}
}

func TestSpeakerPeerHangUpFailsPendingCalls(t *testing.T) {
	t.Parallel()
	reqs, onReq := queue[*vpnpb.TunnelMessage]()
	m, tun := speakerPair(t, Options[*vpnpb.TunnelMessage]{OnRequest: onReq},
		Options[*vpnpb.ManagerMessage]{})
	const pending = 5
	errs := make(chan error, pending)
	for range pending {
		go func() {
			_, err := tun.Call(testContext(t), &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_NetworkSettings{}})
			errs <- err
		}()
	}
	for range pending {
		recv(t, reqs, "request")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for range pending {
		err := recv(t, errs, "failed call")
		if !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "peer closed the CoderVPN connection") {
			t.Fatalf("pending call after hang-up = %v, want ErrClosed and io.EOF saying the peer closed", err)
		}
	}
	waitDone(t, tun.Done(), "tunnel session end")
	if err := tun.Err(); !errors.Is(err, io.EOF) || errors.Is(err, ErrClosed) {
		t.Fatalf("Err = %v, want a clean io.EOF from the peer", err)
	}
	if err := m.Err(); !errors.Is(err, ErrClosed) {
		t.Fatalf("manager Err after its own Close = %v, want ErrClosed", err)
	}
	// New calls fail at once, saying why.
	_, err := tun.Call(testContext(t), &vpnpb.TunnelMessage{})
	if !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
		t.Fatalf("Call after the session ended = %v", err)
	}
	if err := tun.Send(&vpnpb.TunnelMessage{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after the session ended = %v", err)
	}
}

func TestSpeakerReplyFinal(t *testing.T) {
	t.Parallel()
	reqs, onReq := queue[*vpnpb.ManagerMessage]()
	m, tun := speakerPair(t, Options[*vpnpb.TunnelMessage]{},
		Options[*vpnpb.ManagerMessage]{OnRequest: onReq})
	replied := make(chan struct{})
	go func() {
		defer close(replied)
		req := <-reqs
		if err := tun.ReplyFinal(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Stop{Stop: &vpnpb.StopResponse{Success: true}}}); err != nil {
			t.Error(err)
		}
		if err := tun.Send(&vpnpb.TunnelMessage{}); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "final reply") {
			t.Errorf("Send after ReplyFinal = %v, want ErrClosed about the final reply", err)
		}
	}()
	resp, err := m.Call(testContext(t), &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Stop{Stop: &vpnpb.StopRequest{}}})
	if err != nil || !resp.GetStop().GetSuccess() {
		t.Fatalf("Stop call = %v, %v", resp, err)
	}
	// The tunnel closed its write side: the manager sees a clean end...
	waitDone(t, m.Done(), "manager session end after the final reply")
	if err := m.Err(); !errors.Is(err, io.EOF) {
		t.Fatalf("manager Err = %v, want io.EOF", err)
	}
	// ...and closes its own side in turn, which ends the tunnel's session cleanly.
	waitDone(t, tun.Done(), "tunnel session end")
	if err := tun.Err(); !errors.Is(err, io.EOF) {
		t.Fatalf("tunnel Err = %v, want io.EOF", err)
	}
	waitDone(t, replied, "the replying goroutine")
}
