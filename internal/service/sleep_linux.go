package service

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"
)

// logind's signal before and after sleep.
const (
	login1Path      = "/org/freedesktop/login1"
	login1Interface = "org.freedesktop.login1.Manager"
	prepareForSleep = "PrepareForSleep"
)

// WatchResume calls onResume each time systemd-logind announces the
// machine woke up (PrepareForSleep(false)) on conn, until ctx ends. The
// tunnel's sockets and paths are stale after a sleep; a WakeRequest has the
// engine rebind them at once instead of waiting for timeouts.
func WatchResume(ctx context.Context, conn *dbus.Conn, onResume func()) error {
	opts := []dbus.MatchOption{
		dbus.WithMatchObjectPath(login1Path),
		dbus.WithMatchInterface(login1Interface),
		dbus.WithMatchMember(prepareForSleep),
	}
	if err := conn.AddMatchSignalContext(ctx, opts...); err != nil {
		return fmt.Errorf("subscribe to logind's %s: %w", prepareForSleep, err)
	}
	ch := make(chan *dbus.Signal, 16)
	conn.Signal(ch)
	defer conn.RemoveSignal(ch)
	for {
		select {
		case <-ctx.Done():
			return nil
		case sig, ok := <-ch:
			if !ok {
				return nil
			}
			if sig.Path != login1Path || sig.Name != login1Interface+"."+prepareForSleep || len(sig.Body) != 1 {
				continue
			}
			if sleeping, ok := sig.Body[0].(bool); ok && !sleeping {
				onResume()
			}
		}
	}
}
