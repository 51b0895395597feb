package vpnlib_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"cdr.dev/slog/v3"
	"cdr.dev/slog/v3/sloggers/slogtest"

	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// testTimeout bounds each step of an end-to-end test (a start, a stop, a
// wait for an agent), and r.ctx, which tests use for their own steps.
const testTimeout = 60 * time.Second

// rig is one tunnel under test with its host and (optionally) deployment.
type rig struct {
	t *testing.T
	// ctx ends testTimeout after the rig was made: for tests of a few short
	// steps. The rig's own steps each get a deadline of their own (step), so
	// a long setup on a loaded machine leaves them their full time.
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

// step returns a context for one step of the test, ending testTimeout from
// now or when the test ends.
func (r *rig) step() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	r.t.Cleanup(cancel)
	return ctx
}

// start sends a StartRequest for the rig's deployment and requires success.
func (r *rig) start(extra func(*vpnpb.StartRequest)) {
	r.t.Helper()
	req := &vpnpb.StartRequest{CoderUrl: r.d.URL.String(), ApiToken: r.d.Token}
	if extra != nil {
		extra(req)
	}
	resp, err := r.h.Start(r.step(), req)
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
	st, err := r.h.WaitPeerUpdate(r.step(), func(s *hosttest.PeerState) bool { return s.Agent(ws, agent) != nil })
	if err != nil {
		r.t.Fatal(err)
	}
	return st.Agent(ws, agent)
}

// stop sends StopRequest, requires success, and waits for both ends to end.
func (r *rig) stop() {
	r.t.Helper()
	ctx := r.step()
	resp, err := r.h.Stop(ctx)
	if err != nil {
		r.t.Fatalf("stop: %v", err)
	}
	if !resp.Success {
		r.t.Fatalf("stop failed: %s", resp.ErrorMessage)
	}
	r.waitDone(testTimeout)
	select {
	case <-r.h.Done():
	case <-ctx.Done():
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

// leakWait bounds the wait for what a test opened to go: goroutines
// exiting, fds closing. On an idle machine they go within milliseconds; the
// bound is for a loaded one (the race detector, both cores busy), where the
// engine's goroutines for thousands of peers take seconds to be scheduled
// and exit.
const leakWait = 30 * time.Second

// checkNoLeaks records the fds and goroutines now and, at cleanup (after
// every later cleanup ran), waits for those opened since to be gone. Tests
// using it must not be parallel: another test's fds and goroutines would be
// taken for this one's.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	before := fdtest.Take(t)
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		before.WaitClosed(t, nil, leakWait, "the test")
		waitNoNewGoroutines(t, ignore, "the test")
	})
}

// waitNoNewGoroutines waits up to leakWait for every goroutine started
// since ignore was taken to exit, and fails the test naming those left.
func waitNoNewGoroutines(t *testing.T, ignore goleak.Option, who string) {
	t.Helper()
	deadline := time.Now().Add(leakWait)
	for {
		err := goleak.Find(ignore) // itself retries for about half a second
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines left by %s after %s: %v", who, leakWait, err)
			return
		}
	}
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
