package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/godbus/dbus/v5"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/codervpn/codervpn/internal/service"
	vpnpb "github.com/codervpn/codervpn/proto"
)

// serviceConfig is what `codervpn service` was asked to do.
type serviceConfig struct {
	Socket, Group, StateDir string
	Backend, TunName, NetNS string
	LogLevel                logLevel
}

func parseServiceFlags(args []string, usageOut io.Writer) (serviceConfig, error) {
	var cfg serviceConfig
	fs := flag.NewFlagSet("codervpn service", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var level, netnsName string
	fs.StringVar(&cfg.Socket, "socket", defaultSocket, "where to listen for clients")
	fs.StringVar(&cfg.Group, "group", "codervpn", "the group whose members may drive the tunnel")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/codervpn", "where a login saved with `up --persist` is kept")
	fs.StringVar(&cfg.Backend, "backend", backendInProcess, "where the tunnel runs: inprocess or daemon (a child process)")
	fs.StringVar(&cfg.TunName, "tun-name", "coder0", "the name of the TUN interface")
	fs.StringVar(&netnsName, "netns", "", "create the TUN in this network namespace (a name or a path)")
	fs.StringVar(&level, "log-level", "info", "the lowest level logged on stderr: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usageOut, "codervpn service [flags]",
				"The system service that owns the tunnel (run it as root, under systemd: scripts/codervpn.service).\n"+
					"Members of --group drive it with `codervpn up`, `status` and `down`.", fs)
			return cfg, errHelp
		}
		return cfg, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return cfg, usagef("unexpected argument %q: `service` takes only flags", fs.Arg(0))
	}
	switch cfg.Backend {
	case backendInProcess, backendDaemon:
	default:
		return cfg, usagef("--backend %q: choose inprocess or daemon", cfg.Backend)
	}
	var err error
	if err = checkTunName(cfg.TunName); err != nil {
		return cfg, err
	}
	if cfg.LogLevel, err = parseLogLevel(level); err != nil {
		return cfg, err
	}
	if cfg.NetNS, err = netnsPath(netnsName); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// cmdService runs the service until SIGTERM or SIGINT, then stops the
// tunnel, removes what it configured and exits 0.
func cmdService(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseServiceFlags(args, stdout)
	if err != nil {
		return reportCLIError("service", err, stderr)
	}
	group, err := service.LookupGroup(cfg.Group)
	if err != nil {
		return reportCLIError("service", &usageError{msg: err.Error()}, stderr)
	}
	if os.Geteuid() != 0 {
		return reportCLIError("service", errors.New("the service creates the TUN and configures routes: run it as root (systemd: scripts/codervpn.service)"), stderr)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slogLevel(cfg.LogLevel)}))
	if err := removeStaleTUN(cfg.TunName, cfg.NetNS); err != nil {
		return reportCLIError("service", err, stderr)
	}
	l, err := service.Listen(cfg.Socket, group)
	if err != nil {
		return reportCLIError("service", err, stderr)
	}
	out := newOutput(false, stderr, stderr)
	out.dropPeers = true
	srv := service.New(service.Config{
		Backend:  &linkBackend{cfg: cfg, out: out},
		Group:    group,
		StateDir: cfg.StateDir,
		Logger:   log,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go watchSleep(ctx, srv, log)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Info("codervpn service listening", "socket", cfg.Socket, "group", group.Name, "backend", cfg.Backend)
	select {
	case s := <-sigs:
		log.Info("stopping", "signal", s.String())
	case err := <-served:
		if err != nil {
			_ = srv.Close()
			return reportCLIError("service", err, stderr)
		}
	}
	if err := srv.Close(); err != nil {
		log.Warn("stopping the tunnel", "error", err)
	}
	if err := <-served; err != nil {
		log.Warn("serving", "error", err)
	}
	return exitOK
}

// slogLevel maps --log-level onto the standard library's levels (the
// service's own records; the tunnel's go through the protocol's Log).
func slogLevel(l logLevel) slog.Level {
	switch l.Proto {
	case vpnpb.Log_DEBUG:
		return slog.LevelDebug
	case vpnpb.Log_INFO:
		return slog.LevelInfo
	case vpnpb.Log_WARN:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// watchSleep sends the tunnel a WakeRequest on every resume logind
// announces on the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured).
func watchSleep(ctx context.Context, srv *service.Server, log *slog.Logger) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		log.Warn("no system bus: waking from sleep will not be noticed (the engine recovers by itself, more slowly)", "error", err)
		return
	}
	defer conn.Close()
	err = service.WatchResume(ctx, conn, func() {
		log.Info("resumed from sleep; waking the tunnel")
		if err := srv.Wake(); err != nil {
			log.Warn("wake the tunnel", "error", err)
		}
	})
	if err != nil {
		log.Warn("watch for resume from sleep", "error", err)
	}
}

// removeStaleTUN deletes an interface left under our name by a previous
// run that was killed (its routes and resolved settings go with it).
func removeStaleTUN(name, nsPath string) error {
	h := &netlink.Handle{}
	if nsPath != "" {
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			return fmt.Errorf("open network namespace %s: %w", nsPath, err)
		}
		defer ns.Close()
		if h, err = netlink.NewHandleAt(ns); err != nil {
			return fmt.Errorf("netlink in %s: %w", nsPath, err)
		}
		defer h.Close()
	}
	link, err := h.LinkByName(name)
	if err != nil {
		return nil // not there: nothing to clean
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("remove the interface %s a previous run left: %w", name, err)
	}
	return nil
}

// linkBackend starts tunnels for the service with the same code as `up`:
// a kernel TUN, netlink and resolved, the tunnel in process or in a daemon.
type linkBackend struct {
	cfg serviceConfig
	out *output
}

func (b *linkBackend) Start(ctx context.Context, req *vpnpb.StartRequest, ev service.Events) (service.Running, error) {
	dev, err := openKernelDevice(ctx, kernelConfig{Name: b.cfg.TunName, NetNS: b.cfg.NetNS, Notify: b.out.notice})
	if err != nil {
		return nil, err
	}
	l, err := bringUp(ctx, dev, linkConfig{
		Start:        req,
		Backend:      backendConfig{Kind: b.cfg.Backend, LogLevel: b.cfg.LogLevel},
		Out:          b.out,
		OnPeerUpdate: ev.PeerUpdate,
	})
	if err != nil {
		return nil, err
	}
	return linkRunning{l}, nil
}

// linkRunning is a link as the service sees it.
type linkRunning struct{ l *link }

func (r linkRunning) Stop(ctx context.Context) error { return r.l.down(ctx) }
func (r linkRunning) Wake(ctx context.Context) error { return r.l.mgr.sess.Wake(ctx) }
func (r linkRunning) Done() <-chan struct{}          { return r.l.mgr.Done() }
func (r linkRunning) Err() error                     { return r.l.mgr.Err() }
