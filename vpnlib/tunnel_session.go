package vpnlib

import (
	"context"
	"sync"
	"time"

	"github.com/tailscale/wireguard-go/tun"
	"tailscale.com/net/netmon"

	"github.com/coder/coder/v2/tailnet"

	"github.com/codervpn/codervpn/internal/coderd"
)

// gracefulDisconnect bounds the goodbye to the coordinator when a session
// ends, so a host that died is fully cleaned up within a second.
const gracefulDisconnect = 500 * time.Millisecond

// session is one started tunnel: the engine, the controllers that program
// it, and what reports on it.
type session struct {
	runCtx     context.Context    // ends when the session closes
	cancel     context.CancelFunc // ends runCtx: the controllers and the ping loop
	controller *tailnet.Controller
	conn       engine
	mon        *netmon.Monitor // the engine's network monitor (route_watch.go)
	dev        tun.Device
	settings   *netSettings
	peers      *peerTracker
	waker      *waker
	client     *coderd.Client
	wg         sync.WaitGroup
	haltOnce   sync.Once
	haltErr    error
	finishOnce sync.Once
}

// close stops everything the session runs and releases the device.
func (s *session) close() error {
	err := s.halt()
	s.finish()
	return err
}

// halt stops the session carrying traffic: when it returns, the engine and
// the device are closed, and the session sends the manager no more network
// settings or peer updates (both are silenced first, so that tearing the
// engine down sends the manager nothing).
//
// What is left for finish is the goodbye to the coordinator, which the
// controllers started when halt canceled them and which runs beside the
// engine's teardown. It is bounded (gracefulDisconnect) but takes a round
// trip to the deployment and the coordinator's work on every tunnel we had
// (at 2,000 agents, bench/RESULTS.md): the StopResponse need not wait for
// it. The engine closing under the controllers is safe:
// our engineProxy stops handing it peer updates once the session ends, and
// what the controllers still set on it (DERP map, DNS names, tunnel
// destinations) a closed engine keeps without acting on.
func (s *session) halt() error {
	s.haltOnce.Do(func() {
		s.settings.shutdown()
		s.peers.silence()
		s.cancel()
		s.wg.Wait()
		s.waker.close() // a wake's rebind ends quickly once runCtx is canceled
		s.haltErr = s.conn.Close()
		_ = s.mon.Close() // the engine closed it, unless it is a test's fake
		_ = s.dev.Close() // the engine closed it already; this is a no-op then
	})
	return s.haltErr
}

// finish waits for the controllers to end (the coordinator's goodbye) and
// closes the idle connections to the deployment. It halts the session
// first if that has not happened yet.
func (s *session) finish() {
	_ = s.halt()
	s.finishOnce.Do(func() {
		<-s.controller.Closed()
		s.client.CloseIdle()
	})
}

// onceClosedDevice lets both the engine and our error paths close the
// device without caring who was first.
type onceClosedDevice struct {
	tun.Device
	once sync.Once
	err  error
}

func (d *onceClosedDevice) Close() error {
	d.once.Do(func() { d.err = d.Device.Close() })
	return d.err
}
