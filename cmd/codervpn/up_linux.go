package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/codervpn/codervpn/internal/buildinfo"
	"github.com/codervpn/codervpn/internal/status"
	vpnpb "github.com/codervpn/codervpn/proto"
)

// downTimeout bounds a clean disconnect; a second Ctrl-C cuts it short.
const downTimeout = 30 * time.Second

// cmdUp is `codervpn up`: it runs until Ctrl-C or SIGTERM, then disconnects
// and removes everything it configured.
func cmdUp(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseUpFlags(args, getenv, stdout)
	if err != nil {
		return reportCLIError("up", err, stderr)
	}
	out := newOutput(cfg.JSON, stdout, stderr)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	if !cfg.Foreground {
		err := runServiceUp(cfg, out, sigs)
		if !errors.Is(err, errNoService) || os.Geteuid() != 0 {
			if err != nil {
				fmt.Fprintf(stderr, "codervpn up: %v\n", err)
				return exitError
			}
			return exitOK
		}
		// `sudo codervpn up` without a service: a tunnel in this terminal.
		out.notice("no codervpn service runs; running the tunnel in this terminal")
	}
	if err := runUp(cfg, out, sigs); err != nil {
		if cfg.JSON {
			out.Emit(status.Event{Type: status.EventError, Message: err.Error()})
		}
		fmt.Fprintf(stderr, "codervpn up: %v\n", err)
		return exitError
	}
	return exitOK
}

// runUp connects, shows status until a signal or the tunnel's end, and
// disconnects. A signal is a clean end (nil error) once the teardown
// succeeded; the tunnel ending by itself is an error.
func runUp(cfg upConfig, out *output, sigs <-chan os.Signal) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Until the teardown starts, a signal cancels whatever is in progress.
	interrupted := make(chan os.Signal, 1)
	watchDone, watchExited := make(chan struct{}), make(chan struct{})
	stopWatch := sync.OnceFunc(func() { close(watchDone); <-watchExited })
	defer stopWatch()
	go func() {
		defer close(watchExited)
		select {
		case s := <-sigs:
			interrupted <- s
			cancel()
		case <-watchDone:
		}
	}()

	out.progress(fmt.Sprintf("creating TUN device %s", cfg.TunName))
	dev, err := openKernelDevice(ctx, kernelConfig{Name: cfg.TunName, NetNS: cfg.NetNS, Notify: out.notice})
	if err != nil {
		return err
	}
	out.progress(fmt.Sprintf("connecting to %s (tunnel: %s)", cfg.URL.Redacted(), cfg.Backend))
	l, err := bringUp(ctx, dev, linkConfig{
		Start: &vpnpb.StartRequest{
			CoderUrl: cfg.URL.String(),
			ApiToken: cfg.Token,
			Headers:  protoHeaders(cfg.Headers),
			DeviceOs: "Linux", CoderDesktopVersion: "codervpn " + buildinfo.Version,
		},
		Backend: backendConfig{Kind: cfg.Backend, Lib: cfg.Lib, DLHost: cfg.DLHost, LogLevel: cfg.LogLevel},
		Out:     out,
	})
	if err != nil {
		select {
		case s := <-interrupted:
			// bringUp undid everything; being interrupted is not a failure.
			out.Emit(status.Event{Type: status.EventStopped, Message: fmt.Sprintf("%s while connecting: cancelled, nothing left configured", s)})
			return nil
		default:
			return err
		}
	}
	out.progress(fmt.Sprintf("connected through %s; press Ctrl-C to disconnect", dev.Describe()))
	// The table follows the tunnel's PeerUpdates; repeat it here only if one
	// came before this line, so the table is not scrolled away by it.
	if l.mgr.peerUpdates() > 0 {
		out.Emit(status.Event{Type: status.EventPeers, Peers: l.mgr.Rows()})
	}

	var unexpected error
	select {
	case s := <-interrupted:
		out.progress(fmt.Sprintf("%s: disconnecting", s))
	case <-l.mgr.Done():
		unexpected = fmt.Errorf("the tunnel ended the session unexpectedly: %w", l.mgr.Err())
	}

	// From here a (further) signal cuts the waits short; the teardown
	// itself (settings removal) still runs.
	stopWatch()
	dctx, dcancel := context.WithTimeout(context.Background(), downTimeout)
	defer dcancel()
	downDone := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			out.notice("interrupted again: not waiting for the tunnel any longer")
			dcancel()
		case <-downDone:
		}
	}()
	err = l.down(dctx)
	close(downDone)
	if unexpected != nil {
		return errors.Join(unexpected, err)
	}
	if err != nil {
		return fmt.Errorf("disconnecting: %w", err)
	}
	out.Emit(status.Event{Type: status.EventStopped, Message: "disconnected; the network settings were removed"})
	return nil
}
