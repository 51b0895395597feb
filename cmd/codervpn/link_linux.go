package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
)

// Bounds on the steps of bringing a link up and down, so a wedged tunnel
// process cannot hang the CLI.
const (
	handshakeTimeout = 30 * time.Second
	// startTimeout is a little over the tunnel's own Start deadline, so that
	// its explanation arrives before we give up on it.
	startTimeout = vpnlib.DefaultStartTimeout + 10*time.Second
	// exitGrace is how long a tunnel process gets to exit after the session
	// ended before it is killed.
	exitGrace = 10 * time.Second
)

// linkConfig is what a session needs besides the device.
type linkConfig struct {
	Start    *vpnpb.StartRequest
	Backend  backendConfig
	Out      *output
	Timeline *timeline
	// OnPeerUpdate, if set, gets the tunnel's PeerUpdates (the service).
	OnPeerUpdate func(*vpnpb.PeerUpdate)
}

// link is a running session: a device, the tunnel on it, and the manager
// between them. `up` and the demo both make one with bringUp and end it with
// down.
type link struct {
	dev  device
	proc tunnelProc
	mgr  *cliManager

	once    sync.Once
	downErr error
}

// bringUp starts the tunnel on dev, performs the handshake and the Start,
// and returns once the tunnel is running with its first settings applied.
// It owns dev: on error everything is undone, dev included.
func bringUp(ctx context.Context, dev device, cfg linkConfig) (_ *link, err error) {
	l := &link{dev: dev}
	defer func() {
		if err != nil {
			// Bounded, and independent of ctx, which may be what ended.
			dctx, cancel := context.WithTimeout(context.Background(), exitGrace)
			defer cancel()
			_ = l.down(dctx)
		}
	}()
	mgrR, mgrW, proc, err := startTunnel(cfg.Backend, dev.File())
	if err != nil {
		return l, err
	}
	l.proc = proc

	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	l.mgr, err = newManager(hctx, mgrR, mgrW, managerConfig{
		Settings:     dev,
		Out:          cfg.Out,
		MinLog:       cfg.Backend.LogLevel.Proto,
		Timeline:     cfg.Timeline,
		OnPeerUpdate: cfg.OnPeerUpdate,
		// With debug logs, a person wants to see everything as it happens.
		HoldLogs: cfg.Backend.LogLevel.Proto > vpnpb.Log_DEBUG,
	})
	cancel()
	if err != nil {
		return l, l.tunnelFailure(err)
	}
	cfg.Out.progress(fmt.Sprintf("talking CoderVPN %s with the tunnel; starting it", l.mgr.sess.Version()))

	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	err = l.mgr.Start(sctx, cfg.Start)
	cancel()
	if err != nil {
		var se *startError
		if errors.As(err, &se) {
			return l, se
		}
		l.mgr.releaseLogs(true) // no verdict from the tunnel: its logs may explain
		return l, l.tunnelFailure(err)
	}
	return l, nil
}

// tunnelFailure explains a session that broke: if the tunnel process died,
// its exit says more than the broken pipe does.
func (l *link) tunnelFailure(err error) error {
	if l.proc == nil {
		return err
	}
	select {
	case <-l.proc.Exited():
	case <-time.After(2 * time.Second):
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), exitGrace)
	defer cancel()
	if perr := l.proc.Wait(ctx); perr != nil {
		return fmt.Errorf("%w (%v)", perr, err)
	}
	return err
}

// down stops the tunnel (StopRequest, StopResponse, the tunnel closing its
// side), waits for the tunnel process to end, and then undoes every setting
// on the device and releases it. It is idempotent; each step runs even when
// an earlier one failed, so that nothing is left configured.
func (l *link) down(ctx context.Context) error {
	l.once.Do(func() {
		var errs []error
		if l.mgr != nil {
			select {
			case <-l.mgr.Done(): // already over: nothing to stop
			default:
				if err := l.mgr.Stop(ctx); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if l.proc != nil {
			wctx, cancel := context.WithTimeout(ctx, exitGrace)
			if err := l.proc.Wait(wctx); err != nil {
				errs = append(errs, err)
			}
			cancel()
		}
		if l.mgr != nil {
			// The tunnel is gone, so its side of the session is closed: this
			// only collects the manager's goroutines.
			_ = l.mgr.Close()
		}
		if err := l.dev.Close(); err != nil {
			errs = append(errs, err)
		}
		l.downErr = errors.Join(errs...)
	})
	return l.downErr
}
