package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"cdr.dev/slog/v3"
	"cdr.dev/slog/v3/sloggers/sloghuman"
	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/vpnlib"
)

// daemonConfig is `codervpn daemon`'s command line.
type daemonConfig struct {
	ReadFD, WriteFD, TunFD int
	LogLevel               logLevel
}

// parseDaemonFlags reads the fds the managing process passed. The names
// --rpc-read-handle and --rpc-write-handle (and their CODER_VPN_DAEMON_*
// variables) are accepted too: they are what Coder Desktop passes to
// `coder vpn-daemon run`.
func parseDaemonFlags(args []string, getenv func(string) string, usageOut io.Writer) (daemonConfig, error) {
	cfg := daemonConfig{ReadFD: -1, WriteFD: -1, TunFD: -1}
	fs := flag.NewFlagSet("codervpn daemon", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.IntVar(&cfg.ReadFD, "rpc-read-fd", -1, "fd to read ManagerMessages from (required)")
	fs.IntVar(&cfg.ReadFD, "rpc-read-handle", -1, "the same as --rpc-read-fd")
	fs.IntVar(&cfg.WriteFD, "rpc-write-fd", -1, "fd to write TunnelMessages to (required)")
	fs.IntVar(&cfg.WriteFD, "rpc-write-handle", -1, "the same as --rpc-write-fd")
	fs.IntVar(&cfg.TunFD, "tun-fd", -1, "the TUN device's fd; -1: StartRequest.tunnel_file_descriptor")
	level := fs.String("log-level", "info", "the lowest level logged, to stderr and to the manager: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usageOut, "codervpn daemon --rpc-read-fd R --rpc-write-fd W [--tun-fd T]",
				"Runs the tunnel core speaking the CoderVPN protocol over inherited file descriptors,\n"+
					"for a managing process (the contract Coder Desktop uses for its tunnel process).\n"+
					"Exits 0 after a clean Stop or when the manager closes the pipe, 1 on a protocol error.", fs)
			return cfg, errHelp
		}
		return cfg, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return cfg, usagef("unexpected argument %q: `daemon` takes only flags", fs.Arg(0))
	}
	for _, e := range []struct {
		fd  *int
		env string
	}{{&cfg.ReadFD, "CODER_VPN_DAEMON_RPC_READ_HANDLE"}, {&cfg.WriteFD, "CODER_VPN_DAEMON_RPC_WRITE_HANDLE"}} {
		if v := getenv(e.env); *e.fd < 0 && v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return cfg, usagef("%s=%q is not a file descriptor number", e.env, v)
			}
			*e.fd = n
		}
	}
	switch {
	case cfg.ReadFD < 0 || cfg.WriteFD < 0:
		return cfg, usagef("--rpc-read-fd and --rpc-write-fd are required: the fds of the pipes from and to the manager")
	case cfg.ReadFD == cfg.WriteFD:
		return cfg, usagef("--rpc-read-fd and --rpc-write-fd are both %d; they must be the two different pipe ends", cfg.ReadFD)
	case cfg.TunFD >= 0 && (cfg.TunFD == cfg.ReadFD || cfg.TunFD == cfg.WriteFD):
		return cfg, usagef("--tun-fd %d is also a pipe fd", cfg.TunFD)
	case cfg.TunFD < -1:
		return cfg, usagef("--tun-fd %d: give an fd, or -1 to take it from the StartRequest", cfg.TunFD)
	}
	var err error
	cfg.LogLevel, err = parseLogLevel(*level)
	return cfg, err
}

// cmdDaemon is `codervpn daemon`: the tunnel core on inherited fds. It ends
// with the session: the manager stopped it or hung up (exit 0), or the
// session broke (exit 1). SIGINT or SIGTERM closes it (exit 0).
func cmdDaemon(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseDaemonFlags(args, getenv, stdout)
	if err != nil {
		return reportCLIError("daemon", err, stderr)
	}
	rd, err := pipeFile(cfg.ReadFD, "rpc-read")
	if err != nil {
		return reportCLIError("daemon", usagef("--rpc-read-fd %d: %v", cfg.ReadFD, err), stderr)
	}
	wr, err := pipeFile(cfg.WriteFD, "rpc-write")
	if err != nil {
		rd.Close()
		return reportCLIError("daemon", usagef("--rpc-write-fd %d: %v", cfg.WriteFD, err), stderr)
	}
	logger := slog.Make(sloghuman.Sink(stderr)).Leveled(cfg.LogLevel.Slog).Named("codervpn-daemon")
	t, err := vpnlib.NewTunnel(vpnlib.TunnelConfig{
		TunFD: cfg.TunFD, RPCRead: rd, RPCWrite: wr,
		Logger: logger, LogLevel: cfg.LogLevel.Slog,
	})
	if err != nil {
		return reportCLIError("daemon", fmt.Errorf("start the tunnel: %w", err), stderr)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case <-t.Done():
	case s := <-sigs:
		fmt.Fprintf(stderr, "codervpn daemon: %s: closing the tunnel\n", s)
		_ = t.Close()
		return exitOK
	}
	_ = t.Close() // waits for the last goroutines
	if err := t.Err(); err != nil {
		fmt.Fprintf(stderr, "codervpn daemon: the session ended with an error: %v\n", err)
		return exitError
	}
	return exitOK
}

// pipeFile wraps an inherited fd for the tunnel. The fd is made
// non-blocking so that the runtime's poller serves it and closing the file
// unblocks a pending Read or Write, as the tunnel requires.
func pipeFile(fd int, name string) (*os.File, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("not an open file descriptor: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("make it non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), name), nil
}
