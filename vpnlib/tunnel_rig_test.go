package vpnlib_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"cdr.dev/slog/v3"
	"cdr.dev/slog/v3/sloggers/slogtest"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// testTimeout bounds each end-to-end test's waits.
const testTimeout = 60 * time.Second

// rig is one tunnel under test with its host and (optionally) deployment.
type rig struct {
	t   *testing.T
	ctx context.Context
	d   *vpntest.Deployment
	h   *hosttest.Host
	tun *vpnlib.Tunnel
}

type rigOptions struct {
	deployment *vpntest.Options // nil: no deployment
	host       hosttest.Options
	config     func(*vpnlib.TunnelConfig)
}

// newRig starts a host and a tunnel on its fds, connects the manager, and
// registers cleanups that check every fd and goroutine the test made is gone.
// Tests using it must not be parallel: fd counts are process-wide.
func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	r := &rig{t: t, ctx: ctx}
	if o.deployment != nil {
		dopts := *o.deployment
		dopts.Logger = slogtest.Make(t, &slogtest.Options{IgnoreErrors: true}).Leveled(slog.LevelInfo).Named("deployment")
		r.d = vpntest.New(t, dopts)
	}
	r.h = hosttest.New(t, o.host)
	tunFile, read, write := r.h.TunnelFiles()
	cfg := vpnlib.TunnelConfig{
		TunFD:        int(tunFile.Fd()),
		RPCRead:      read,
		RPCWrite:     write,
		PingInterval: 200 * time.Millisecond,
		Logger:       slogtest.Make(t, &slogtest.Options{IgnoreErrors: true}).Leveled(slog.LevelInfo),
	}
	if o.host.SendTunFD {
		cfg.TunFD = -1
	}
	if o.config != nil {
		o.config(&cfg)
	}
	tun, err := vpnlib.NewTunnel(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.tun = tun
	t.Cleanup(func() {
		_ = tun.Close()
		for _, v := range r.h.Violations() {
			t.Errorf("host saw a protocol violation: %v", v)
		}
	})
	if err := r.h.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	return r
}

// start sends a StartRequest for the rig's deployment and requires success.
func (r *rig) start(extra func(*vpnpb.StartRequest)) {
	r.t.Helper()
	req := &vpnpb.StartRequest{CoderUrl: r.d.URL.String(), ApiToken: r.d.Token}
	if extra != nil {
		extra(req)
	}
	resp, err := r.h.Start(r.ctx, req)
	if err != nil {
		r.t.Fatalf("start: %v", err)
	}
	if !resp.Success {
		r.t.Fatalf("start failed: %s", resp.ErrorMessage)
	}
}

// waitAgent waits until the host knows workspace/agent.
func (r *rig) waitAgent(ws, agent string) *vpnpb.Agent {
	r.t.Helper()
	st, err := r.h.WaitPeerUpdate(r.ctx, func(s *hosttest.PeerState) bool { return s.Agent(ws, agent) != nil })
	if err != nil {
		r.t.Fatal(err)
	}
	return st.Agent(ws, agent)
}

// stop sends StopRequest, requires success, and waits for both ends to end.
func (r *rig) stop() {
	r.t.Helper()
	resp, err := r.h.Stop(r.ctx)
	if err != nil {
		r.t.Fatalf("stop: %v", err)
	}
	if !resp.Success {
		r.t.Fatalf("stop failed: %s", resp.ErrorMessage)
	}
	r.waitDone(testTimeout)
	select {
	case <-r.h.Done():
	case <-r.ctx.Done():
		r.t.Fatal("the manager saw no EOF after StopResponse")
	}
}

func (r *rig) waitDone(d time.Duration) {
	r.t.Helper()
	select {
	case <-r.tun.Done():
	case <-time.After(d):
		r.t.Fatalf("the tunnel did not end within %s", d)
	}
}

// checkNoLeaks records the fds and goroutines now and, at cleanup (after
// every later cleanup ran), waits for both to be back.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	before := fdSet(t)
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		waitNoNewFDs(t, before, "the test")
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines leaked: %v", err)
		}
	})
}

// waitNoNewFDs waits until every fd open now was open in before, and fails
// the test naming the ones that stay.
func waitNoNewFDs(t *testing.T, before map[string]string, who string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var extra []string
		for fd, target := range fdSet(t) {
			if _, ok := before[fd]; !ok {
				extra = append(extra, fmt.Sprintf("%s -> %s", fd, target))
			}
		}
		if len(extra) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("fds left by %s: %s", who, strings.Join(extra, ", "))
			return
		}
		time.Sleep(20 * time.Millisecond) // polling /proc: there is nothing to wait on
	}
}

func fdSet(t *testing.T) map[string]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count fds without /proc: %v", err)
	}
	out := make(map[string]string, len(entries))
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the fd ReadDir itself used, closed by now
		}
		out[e.Name()] = target
	}
	return out
}

// logsContain reports whether any Log message the host got mentions s.
func logsContain(h *hosttest.Host, s string) (string, bool) {
	for _, l := range h.Logs() {
		text := fmt.Sprint(l.GetMessage(), l.GetLoggerNames(), l.GetFields())
		if strings.Contains(text, s) {
			return text, true
		}
	}
	return "", false
}

// quietLog silences net/http's server error log (TLS handshake failures
// the tests provoke on purpose).
func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }
