package vpnlib

import (
	"fmt"

	"tailscale.com/net/interfaces"
	"tailscale.com/net/netmon"

	"github.com/coder/coder/v2/tailnet"
)

// Why the tunnel watches the routes to its deployment:
//
// Another VPN coming up on the same machine (OpenVPN's 0.0.0.0/1 and
// 128.0.0.0/1, a full-tunnel WireGuard's default route) takes the routes
// to the deployment with it. The control connection and DERP, already
// open, may go on for a while, and the first sign would be a failed redial
// once the deployment dropped us: half a minute of "cannot reach" with no
// cause named. The engine's network monitor sees every route change; we
// give the engine a monitor of our own making (tailnet.Options), so that
// on each change the client compares the deployment's routes with those
// it reached the deployment by, and says at once which device took them.
// The monitor is the engine's: one netlink socket, closed with the engine.

// newNetworkMonitor makes the monitor the engine will run and close.
func (t *Tunnel) newNetworkMonitor() (*netmon.Monitor, error) {
	mon, err := netmon.New(tailnet.Logger(t.logger.Named("net").Named("net.wgmonitor")))
	if err != nil {
		return nil, fmt.Errorf("start the network monitor: %w", err)
	}
	return mon, nil
}

// startRouteWatch checks the deployment's routes after each change the
// monitor reports, and whether a local address went away (addr_watch.go),
// until the session ends. The monitor's callbacks run on
// goroutines of their own: ours only signals, so none outlives the
// session by more than that.
func (s *sessionStart) startRouteWatch() {
	sess, client, logger := s.sess, s.client, s.logger.Named("route")
	changed := make(chan struct{}, 1)
	unregister := sess.mon.RegisterChangeCallback(func(bool, *interfaces.State) {
		select {
		case changed <- struct{}{}:
		default: // a check is pending: it will see this change too
		}
	})
	addrs := &addrWatch{rebind: sess.conn.Rebind, logger: s.logger.Named("addr")}
	deployment := s.deploymentAddrs
	sess.wg.Go(func() {
		defer unregister()
		// The first readings (two netlink calls per deployment address, the
		// machine's interfaces) are made here, off the Start's path to its
		// StartResponse. A deployment address inside our routes is
		// excluded from them, so it is looked up at the underlay whenever
		// this runs.
		client.WatchRoutes(deployment)
		addrs.last = localAddrs(currentState(sess.runCtx, addrs.logger))
		for {
			select {
			case <-sess.runCtx.Done():
				return
			case <-changed:
				client.NetworkChanged(sess.runCtx, logger)
				if st := currentState(sess.runCtx, addrs.logger); st != nil {
					addrs.check(sess.runCtx, st)
				}
			}
		}
	})
}
