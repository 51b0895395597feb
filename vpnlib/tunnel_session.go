package vpnlib

import (
	"context"
	"sync"
	"time"

	"github.com/tailscale/wireguard-go/tun"

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
	dev        tun.Device
	settings   *netSettings
	peers      *peerTracker
	waker      *waker
	client     *coderd.Client
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error
}

// close stops everything the session runs and releases the device. The
// network settings are frozen first so that tearing the engine down sends
// the manager nothing.
func (s *session) close() error {
	s.closeOnce.Do(func() {
		s.settings.shutdown()
		s.cancel()
		<-s.controller.Closed()
		s.wg.Wait()
		s.closeErr = s.conn.Close()
		_ = s.dev.Close() // the engine closed it already; this is a no-op then
		s.client.CloseIdle()
	})
	return s.closeErr
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
