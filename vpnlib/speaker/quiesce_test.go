package speaker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// Requests written in one go reach the handler before Quiesce, called while
// handling the first of them, returns: the rest were still in the reader's
// buffer. This is what lets a Stop answer what was pipelined behind it.
func TestQuiesceHandsOverBufferedFrames(t *testing.T) {
	t.Parallel()
	peer, us := newPipePair(t)
	var handled atomic.Int32
	quiesced := make(chan int32, 1)
	var tun *Tunnel
	ready := make(chan struct{})
	calling := make(chan struct{}) // closed just before Quiesce is called
	onReq := func(req *vpnpb.ManagerMessage) {
		switch req.GetRpc().GetMsgId() {
		case 2:
			// The reader is still busy with the rest when Quiesce starts.
			<-calling
		case 1:
			// As the tunnel does: another goroutine serves the request
			// and waits for what came with it.
			go func() {
				<-ready
				close(calling)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if !tun.Quiesce(ctx) {
					t.Error("Quiesce gave up with whole frames in the buffer")
				}
				quiesced <- handled.Load()
			}()
		}
		handled.Add(1)
	}
	// The manager's header and three GetPeerUpdate requests in one write.
	// ManagerMessage{rpc: {msg_id: N}, get_peer_update: {}}
	hand := []byte("codervpn manager 1.3\n")
	for id := byte(1); id <= 3; id++ {
		hand = append(hand, 0, 0, 0, 6, 0x0a, 0x02, 0x08, id, 0x12, 0x00)
	}
	if _, err := peer.w.Write(hand); err != nil {
		t.Fatal(err)
	}
	var err error
	tun, err = NewTunnel(testContext(t), us.r, us.w, Options[*vpnpb.ManagerMessage]{OnRequest: onReq})
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	defer tun.Close()
	readExactly(t, peer.r, []byte("codervpn tunnel 1.3\n"), "tunnel header")
	if n := <-quiesced; n != 3 {
		t.Fatalf("Quiesce returned with %d of 3 requests handed over", n)
	}
}
