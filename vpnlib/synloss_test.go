package vpnlib_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"cdr.dev/slog/v3"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/key"

	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// peerView is one look at a WireGuard peer from one side.
type peerView struct {
	ok        bool
	hs        time.Time
	cur, derp string
	rx, tx    int64
}

func viewOf(st *ipnstate.Status, k key.NodePublic) peerView {
	if st == nil {
		return peerView{}
	}
	ps, ok := st.Peer[k]
	if !ok {
		return peerView{}
	}
	return peerView{ok: true, hs: ps.LastHandshake, cur: ps.CurAddr, derp: ps.Relay, rx: ps.RxBytes, tx: ps.TxBytes}
}

func (v peerView) String() string {
	if !v.ok {
		return "no peer"
	}
	return fmt.Sprintf("hs=%s cur=%q relay=%q rx=%d tx=%d", v.hs.Format("15:04:05.000"), v.cur, v.derp, v.rx, v.tx)
}

// TestSynLossHunt (issue 17) dials the soak's two agents, alternately, every
// CODERVPN_SYNLOSS_EVERY (250ms) for CODERVPN_SYNLOSS_DURATION, restarting
// the second every CODERVPN_SYNLOSS_RESTART (never), and logs each dial
// slower than 500 ms with how both ends saw the peer meanwhile: last
// handshake, direct path (cur), DERP relay, bytes. A SYN the agent received
// (its rx grows) and never answered (its tx does not) is the agent's loss;
// one our engine never sent (our tx does not grow) is ours.
// scripts/addr-churn-hunt.sh runs it where addresses come and go.
func TestSynLossHunt(t *testing.T) {
	env := os.Getenv("CODERVPN_SYNLOSS_DURATION")
	if env == "" {
		t.Skip("a hunt; CODERVPN_SYNLOSS_DURATION=60s")
	}
	duration, err := time.ParseDuration(env)
	if err != nil {
		t.Fatal(err)
	}
	every := 250 * time.Millisecond
	if e := os.Getenv("CODERVPN_SYNLOSS_EVERY"); e != "" {
		if every, err = time.ParseDuration(e); err != nil || every <= 0 {
			t.Fatalf("CODERVPN_SYNLOSS_EVERY=%q: want a positive duration such as 1s", e)
		}
	}
	r := newRig(t, rigOptions{
		deployment: &vpntest.Options{},
		config:     func(c *vpnlib.TunnelConfig) { c.LogLevel = slog.LevelInfo },
	})
	ws, steady := r.startWithAgent(r.d.URL.String())
	other, err := r.d.AddAgent(r.ctx, ws.ID, "restarted")
	if err != nil {
		t.Fatal(err)
	}
	r.waitAgent("dev", "restarted")
	waitTraffic(r.step(), t, r.h, other, time.Now())
	start := time.Now()
	ourKey := func() key.NodePublic { return r.tun.EngineNodeKey() }
	peerTick := time.NewTicker(10 * time.Second)
	defer peerTick.Stop()
	restartEvery := time.Hour
	if e := os.Getenv("CODERVPN_SYNLOSS_RESTART"); e != "" {
		if restartEvery, err = time.ParseDuration(e); err != nil || restartEvery <= 0 {
			t.Fatalf("CODERVPN_SYNLOSS_RESTART=%q: want a positive duration such as 60s", e)
		}
	}
	restartTick := time.NewTicker(restartEvery)
	defer restartTick.Stop()
	slowN, n := 0, 0
	var worst time.Duration
	pace := time.NewTicker(every)
	defer pace.Stop()
	for i := 0; time.Since(start) < duration; i++ {
		if i > 0 {
			<-pace.C // the hunt's rate of dials
		}
		select {
		case <-peerTick.C:
			pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _ = r.h.GetPeerUpdate(pctx)
			cancel()
		case <-restartTick.C:
			t.Logf("restart %s at +%v", other.Name, time.Since(start).Round(time.Millisecond))
			other, err = r.d.RestartAgent(r.step(), other.ID)
			if err != nil {
				t.Fatal(err)
			}
		default:
		}
		a := steady
		if i%2 == 1 {
			a = other
		}
		ak := a.Conn().Node().Key
		var (
			mu    sync.Mutex
			lines []string
			last  string
		)
		stop := make(chan struct{})
		done := make(chan struct{})
		begun := time.Now()
		go func() {
			defer close(done)
			tk := time.NewTicker(50 * time.Millisecond)
			defer tk.Stop()
			for {
				s := "ours: " + viewOf(r.tun.EngineStatus(), ak).String() + " | agent's: " + viewOf(a.Conn().Status(), ourKey()).String()
				if s != last {
					mu.Lock()
					lines = append(lines, fmt.Sprintf("  +%v %s", time.Since(begun).Round(time.Millisecond), s))
					mu.Unlock()
					last = s
				}
				select {
				case <-stop:
					return
				case <-tk.C:
				}
			}
		}()
		err := probeHTTPWithin(context.Background(), r.h, a, 10*time.Second)
		took := time.Since(begun)
		close(stop)
		<-done
		n++
		if took > worst {
			worst = took
		}
		if err != nil || took > 500*time.Millisecond {
			slowN++
			mu.Lock()
			t.Logf("SLOW dial %d to %s at +%v took %v err=%v\n%s", i, a.Name, begun.Sub(start).Round(time.Millisecond), took.Round(time.Millisecond), err, strings.Join(lines, "\n"))
			mu.Unlock()
		}
	}
	t.Logf("%d dials, %d slow (>500ms), worst %v", n, slowN, worst.Round(time.Millisecond))
	r.stop()
}
