//go:build linux || darwin

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

// daemonConfig is the command line of `codervpn daemon` and of
// `codervpn vpn-daemon run`.
type daemonConfig struct {
	ReadFD, WriteFD, TunFD int
	LogLevel               logLevel
}

// daemonCommand names one of the two spellings of the daemon, for flag
// errors and usage.
type daemonCommand struct {
	name     string // "daemon" or "vpn-daemon run"
	synopsis string
}

var (
	daemonCmd = daemonCommand{"daemon",
		"codervpn daemon --rpc-read-fd R --rpc-write-fd W [--tun-fd T]"}
	vpnDaemonRunCmd = daemonCommand{"vpn-daemon run",
		"codervpn vpn-daemon run --rpc-read-fd R --rpc-write-fd W"}
)

// rpcFDEnv lists, for each pipe, the environment variables Coder's
// `coder vpn-daemon run` reads when its flag is absent: the _FD names are
// its macOS spelling, the _HANDLE names its Linux and Windows one. Both are
// accepted on every platform.
var rpcFDEnv = []struct {
	flag string
	envs [2]string
}{
	{"--rpc-read-fd", [2]string{"CODER_VPN_DAEMON_RPC_READ_FD", "CODER_VPN_DAEMON_RPC_READ_HANDLE"}},
	{"--rpc-write-fd", [2]string{"CODER_VPN_DAEMON_RPC_WRITE_FD", "CODER_VPN_DAEMON_RPC_WRITE_HANDLE"}},
}

// parseDaemonFlags reads the fds the managing process passed. Coder
// Desktop's names for them are accepted as well as ours: --rpc-read-fd and
// --rpc-write-fd (macOS), --rpc-read-handle and --rpc-write-handle (Linux
// and Windows), each also from its CODER_VPN_DAEMON_* variable; a flag wins
// over the environment.
func parseDaemonFlags(dc daemonCommand, args []string, getenv func(string) string, usageOut io.Writer) (daemonConfig, error) {
	cfg := daemonConfig{ReadFD: -1, WriteFD: -1, TunFD: -1}
	fs := flag.NewFlagSet("codervpn "+dc.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.IntVar(&cfg.ReadFD, "rpc-read-fd", -1, "fd to read ManagerMessages from (required; env CODER_VPN_DAEMON_RPC_READ_FD)")
	fs.IntVar(&cfg.ReadFD, "rpc-read-handle", -1, "the same as --rpc-read-fd (env CODER_VPN_DAEMON_RPC_READ_HANDLE)")
	fs.IntVar(&cfg.WriteFD, "rpc-write-fd", -1, "fd to write TunnelMessages to (required; env CODER_VPN_DAEMON_RPC_WRITE_FD)")
	fs.IntVar(&cfg.WriteFD, "rpc-write-handle", -1, "the same as --rpc-write-fd (env CODER_VPN_DAEMON_RPC_WRITE_HANDLE)")
	fs.IntVar(&cfg.TunFD, "tun-fd", -1, "the TUN device's fd; -1: StartRequest.tunnel_file_descriptor")
	level := fs.String("log-level", "info", "the lowest level logged, to stderr and to the manager: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usageOut, dc.synopsis,
				"Runs the tunnel core speaking the CoderVPN protocol over inherited file descriptors,\n"+
					"for a managing process (the contract Coder Desktop uses for its tunnel process).\n"+
					"Exits 0 after a clean Stop, when the manager closes the pipe, or on SIGTERM;\n"+
					"1 on a protocol error.", fs)
			return cfg, errHelp
		}
		return cfg, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return cfg, usagef("unexpected argument %q: `%s` takes only flags", fs.Arg(0), dc.name)
	}
	for i, fd := range []*int{&cfg.ReadFD, &cfg.WriteFD} {
		if *fd >= 0 {
			continue
		}
		n, err := fdFromEnv(rpcFDEnv[i].envs, getenv)
		if err != nil {
			return cfg, err
		}
		*fd = n
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

// fdFromEnv reads an fd number from the first of envs that is set; -1 if
// none is. Two that disagree are a mistake worth stopping for.
func fdFromEnv(envs [2]string, getenv func(string) string) (int, error) {
	fd, from := -1, ""
	for _, env := range envs {
		v := getenv(env)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return -1, usagef("%s=%q is not a file descriptor number", env, v)
		}
		if from != "" && n != fd {
			return -1, usagef("%s=%d and %s=%d disagree; set one of them", from, fd, env, n)
		}
		fd, from = n, env
	}
	return fd, nil
}

// cmdDaemon is `codervpn daemon`: the tunnel core on inherited fds.
func cmdDaemon(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runDaemonCommand(daemonCmd, args, getenv, stdout, stderr)
}

// runDaemonCommand runs the tunnel core on inherited fds until the session
// ends: the manager stopped it or hung up (exit 0), or the session broke
// (exit 1). SIGINT or SIGTERM closes it (exit 0).
func runDaemonCommand(dc daemonCommand, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseDaemonFlags(dc, args, getenv, stdout)
	if err != nil {
		return reportCLIError(dc.name, err, stderr)
	}
	rd, err := pipeFile(cfg.ReadFD, "rpc-read")
	if err != nil {
		return reportCLIError(dc.name, usagef("--rpc-read-fd %d: %v", cfg.ReadFD, err), stderr)
	}
	wr, err := pipeFile(cfg.WriteFD, "rpc-write")
	if err != nil {
		rd.Close()
		return reportCLIError(dc.name, usagef("--rpc-write-fd %d: %v", cfg.WriteFD, err), stderr)
	}
	logger := slog.Make(sloghuman.Sink(stderr)).Leveled(cfg.LogLevel.Slog).Named("codervpn-daemon")
	t, err := vpnlib.NewTunnel(vpnlib.TunnelConfig{
		TunFD: cfg.TunFD, RPCRead: rd, RPCWrite: wr,
		Logger: logger, LogLevel: cfg.LogLevel.Slog,
	})
	if err != nil {
		return reportCLIError(dc.name, fmt.Errorf("start the tunnel: %w", err), stderr)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case <-t.Done():
	case s := <-sigs:
		fmt.Fprintf(stderr, "codervpn %s: %s: closing the tunnel\n", dc.name, s)
		_ = t.Close()
		return exitOK
	}
	_ = t.Close() // waits for the last goroutines
	if err := t.Err(); err != nil {
		fmt.Fprintf(stderr, "codervpn %s: the session ended with an error: %v\n", dc.name, err)
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
