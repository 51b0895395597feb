package vpnlib_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cdr.dev/slog/v3"

	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// The soak's schedule (issue 17): what it does to one running tunnel, and
// how long after a fault a failed request is forgiven.
const (
	soakConnEvery    = time.Second
	soakRestartEvery = time.Minute
	soakCutEvery     = 5 * time.Minute
	soakPeersEvery   = 10 * time.Second
	soakSampleEvery  = time.Minute
	soakFaultWindow  = 15 * time.Second
	// soakAttemptTimeout bounds one request. The soak judges whether the
	// tunnel answers, not how fast. A new connection used to lose its SYN
	// and two retransmissions (answered after 7.0 s: gVisor's 1, 2 and 4 s)
	// when another test deleted a veth whose address an engine's direct
	// path used (README, Reliability; addr_watch.go fixed our engine's
	// half, the agent's remains); with attemptTimeout's 2 s those runs
	// failed. The slowest answer is printed, with when it began.
	soakAttemptTimeout = 10 * time.Second
	// soakFlat is the largest growth per minute called flat, once the soak
	// ran long enough (soakJudgeAfter) to tell a leak from warm-up.
	soakFlatGoroutines = 0.5
	soakFlatFDs        = 0.5
	soakJudgeAfter     = 10 * time.Minute
	// soakShortest is the shortest run that sees every fault and the
	// tunnel answering after it: an agent restart at 1 min, a control cut
	// at 3/4 of the run (see TestSoak), and requests after both.
	soakShortest = 2 * time.Minute
)

// TestSoak is `make soak DURATION=30m` (not part of `make test`): hours of
// uptime, compressed. One tunnel runs for CODERVPN_SOAK_DURATION while a
// new TCP connection goes to an agent every second, one of the two agents
// is restarted (new keys, same id) every minute, the control connection is
// cut every 5 minutes and GetPeerUpdate asked every 10 s. Each minute it
// prints the process's RSS, goroutines and open fds, and at the end their
// slope per minute. It fails when a request begun outside a fault window
// fails (each may take soakAttemptTimeout), when a fault did not happen or
// either agent never answered after it, and, for runs of 10 minutes or
// more, when goroutines or fds grow by more than half a one per minute (a
// leak of one per reconnect shows).
//
// A short run (CI runs 2 minutes after `make test`) cuts the control
// connection once, at 3/4 of the run, instead of every 5 minutes, so that
// it sees every fault. Its slopes are printed but not judged: through three
// samples a minute apart they are warm-up and GC noise. Its leak check is
// the rig's instead: every goroutine and fd the test made is gone after
// Stop.
func TestSoak(t *testing.T) {
	env := os.Getenv("CODERVPN_SOAK_DURATION")
	if env == "" {
		t.Skip("a soak test; run it with `make soak DURATION=30m` (CODERVPN_SOAK_DURATION)")
	}
	duration, err := time.ParseDuration(env)
	if err != nil || duration < soakShortest {
		t.Fatalf("CODERVPN_SOAK_DURATION=%q: want a duration of at least %v, such as 30m (a shorter run sees no fault and the recovery after it)", env, soakShortest)
	}
	cutEvery := soakCutEvery
	if duration < soakCutEvery {
		cutEvery = duration * 3 / 4
	}
	r := newRig(t, rigOptions{
		deployment: &vpntest.Options{},
		// The test host keeps every Log it gets: at the engine's debug
		// level that alone would grow the RSS.
		config: func(c *vpnlib.TunnelConfig) { c.LogLevel = slog.LevelInfo },
	})
	ws, steady := r.startWithAgent(r.d.URL.String())
	restarted, err := r.d.AddAgent(r.ctx, ws.ID, "restarted")
	if err != nil {
		t.Fatal(err)
	}
	r.waitAgent("dev", "restarted")
	waitTraffic(r.step(), t, r.h, restarted, time.Now())

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var (
		mu        sync.Mutex
		lastFault = time.Now() // the start: the engine settles in
		ok, bad   int
		forgiven  int
		// firstFault is when each kind of fault first happened; answered
		// is when each agent last answered.
		firstFault = map[string]time.Time{}
		answered   = map[string]time.Time{}
	)
	fault := func(kind string) {
		mu.Lock()
		lastFault = time.Now()
		if _, seen := firstFault[kind]; !seen {
			firstFault[kind] = lastFault
		}
		mu.Unlock()
	}
	var slowest time.Duration
	var slowestWhat string
	slow := 0 // answers that took longer than attemptTimeout
	// outcome judges a request that began at begun: a failure is forgiven
	// when it began within a fault window.
	outcome := func(err error, begun time.Time, what, agent string) {
		mu.Lock()
		defer mu.Unlock()
		switch took := time.Since(begun); {
		case err == nil:
			ok++
			if agent != "" {
				answered[agent] = time.Now()
			}
			if took > slowest {
				slowest = took
				slowestWhat = fmt.Sprintf("%s, begun %v after the last fault", what, begun.Sub(lastFault).Round(time.Second))
			}
			if took > attemptTimeout {
				slow++
			}
		case begun.Sub(lastFault) < soakFaultWindow:
			forgiven++
		default:
			bad++
			t.Errorf("%s failed outside a fault window (began %v after the last fault, failed after %v): %v",
				what, begun.Sub(lastFault).Round(time.Second), took.Round(time.Millisecond), err)
		}
	}

	conns := time.NewTicker(soakConnEvery)
	restarts := time.NewTicker(soakRestartEvery)
	cuts := time.NewTicker(cutEvery)
	peers := time.NewTicker(soakPeersEvery)
	samples := time.NewTicker(soakSampleEvery)
	for _, tk := range []*time.Ticker{conns, restarts, cuts, peers, samples} {
		defer tk.Stop()
	}
	start := time.Now()
	var series []soakSample
	series = append(series, takeSoakSample(t, 0))
	for i := 0; ctx.Err() == nil; {
		select {
		case <-ctx.Done():
		case <-conns.C:
			agent := steady
			if i++; i%2 == 0 {
				mu.Lock()
				agent = restarted
				mu.Unlock()
			}
			// Requests are bounded by soakAttemptTimeout only, not by the
			// soak's end: one begun just before it would otherwise fail
			// with the deadline a moment before ctx reports it.
			begun := time.Now()
			err := probeHTTPWithin(context.Background(), r.h, agent, soakAttemptTimeout)
			outcome(err, begun, "a new TCP connection to "+agent.Name, agent.Name)
		case <-restarts.C:
			fault("agent restart")
			a, err := r.d.RestartAgent(r.step(), restarted.ID) // r.ctx ends a minute after the rig began
			if err != nil {
				t.Fatalf("restart agent: %v", err)
			}
			mu.Lock()
			restarted = a
			mu.Unlock()
		case <-cuts.C:
			fault("control connection cut")
			r.d.DropControlConnections()
		case <-peers.C:
			begun := time.Now()
			pctx, pcancel := context.WithTimeout(context.Background(), soakAttemptTimeout)
			_, err := r.h.GetPeerUpdate(pctx)
			pcancel()
			outcome(err, begun, "GetPeerUpdate", "")
		case <-samples.C:
			s := takeSoakSample(t, time.Since(start))
			series = append(series, s)
		}
	}
	series = append(series, takeSoakSample(t, time.Since(start)))
	rss, heap, gor, fds := soakSlopes(series)
	t.Logf("soak of %v: %d requests answered, %d failed in fault windows (forgiven), %d failed outside them", duration, ok, forgiven, bad)
	t.Logf("slowest answer %v (%s); %d answers took longer than %v", slowest.Round(time.Millisecond), slowestWhat, slow, attemptTimeout)
	t.Logf("slope per minute: RSS %+.0f KiB, heap %+.0f KiB, goroutines %+.2f, fds %+.2f", rss, heap, gor, fds)
	for _, kind := range []string{"agent restart", "control connection cut"} {
		at, seen := firstFault[kind]
		if !seen {
			t.Errorf("no %s happened in %v", kind, duration)
			continue
		}
		for _, agent := range []string{steady.Name, restarted.Name} {
			if !answered[agent].After(at) {
				t.Errorf("agent %s never answered after the first %s (at %v)", agent, kind, at.Sub(start).Round(time.Second))
			}
		}
	}
	if duration < soakJudgeAfter {
		t.Logf("slopes not judged: a run under %v cannot tell a leak from warm-up; the leak check is that every goroutine and fd is gone after Stop", soakJudgeAfter)
	} else {
		if gor > soakFlatGoroutines {
			t.Errorf("goroutines grow by %.2f a minute: a leak", gor)
		}
		if fds > soakFlatFDs {
			t.Errorf("fds grow by %.2f a minute: a leak", fds)
		}
	}
	r.stop()
}

// soakSample is one look at the process.
type soakSample struct {
	at         time.Duration
	rssKiB     float64
	heapKiB    float64 // live heap after a GC: RSS alone also counts what the runtime keeps
	goroutines float64
	fds        float64
}

func takeSoakSample(t *testing.T, at time.Duration) soakSample {
	t.Helper()
	s := soakSample{at: at, goroutines: float64(runtime.NumGoroutine())}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.heapKiB = float64(ms.HeapAlloc) / 1024
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				v, _ := strconv.ParseFloat(f[1], 64)
				s.rssKiB = v
			}
		}
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.fds = float64(len(ents))
	}
	t.Logf("soak %6s: RSS %.0f KiB, heap %.0f KiB, goroutines %.0f, fds %.0f", at.Round(time.Second), s.rssKiB, s.heapKiB, s.goroutines, s.fds)
	return s
}

// soakSlopes fits a line through each series (least squares) and returns
// the growth per minute.
func soakSlopes(series []soakSample) (rss, heap, goroutines, fds float64) {
	slope := func(y func(soakSample) float64) float64 {
		n := float64(len(series))
		if n < 2 {
			return 0
		}
		var sx, sy, sxx, sxy float64
		for _, s := range series {
			x := s.at.Minutes()
			sx += x
			sy += y(s)
			sxx += x * x
			sxy += x * y(s)
		}
		den := n*sxx - sx*sx
		if den == 0 {
			return 0
		}
		return (n*sxy - sx*sy) / den
	}
	return slope(func(s soakSample) float64 { return s.rssKiB }),
		slope(func(s soakSample) float64 { return s.heapKiB }),
		slope(func(s soakSample) float64 { return s.goroutines }),
		slope(func(s soakSample) float64 { return s.fds })
}
