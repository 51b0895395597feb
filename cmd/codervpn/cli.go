package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"

	"cdr.dev/slog/v3"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// Exit codes. Scripts can tell a mistake on the command line from a failure
// to connect.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed
	exitUsage = 2 // the command line or environment is wrong
)

// usageError is a problem with the command line or the environment; it is
// reported with a pointer to --help and exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// errHelp means the user asked for help, which was printed.
var errHelp = errors.New("help requested")

const mainUsage = `codervpn puts your Coder workspaces on this machine's network.

Usage:
  codervpn up       connect (through the codervpn service, or in the foreground as root)
  codervpn status   show the service's tunnel: workspaces, agents, latency
  codervpn down     disconnect the service's tunnel
  codervpn service  the system service that owns the tunnel (root, under systemd)
  codervpn daemon   run the tunnel core on inherited fds (for a managing process)
  codervpn vpn-daemon run
                    the same, under the command line Coder Desktop spawns
  codervpn demo     an embedded Coder deployment and a real tunnel, end to end
  codervpn version  print the version

Run 'codervpn <command> --help' for the flags of a command.
`

// defaultSocket is where the codervpn service listens.
const defaultSocket = "/run/codervpn/codervpn.sock"

// Backends: where the tunnel core runs while `up` plays the manager.
const (
	backendInProcess = "inprocess" // in this process, over a pipe pair
	backendDaemon    = "daemon"    // a `codervpn daemon` child process
	backendDylib     = "dylib"     // libcodervpn.so loaded by the C host
)

// upConfig is everything `codervpn up` was asked to do, checked.
type upConfig struct {
	URL      *url.URL
	Token    string
	Headers  []header
	TunName  string
	LogLevel logLevel
	JSON     bool
	Backend  string
	// Lib and DLHost locate libcodervpn.so and the C host for the dylib
	// backend; empty means next to this executable.
	Lib, DLHost string
	// NetNS, if set, is the path of a network namespace to put the TUN in
	// (the tunnel itself keeps using this process's network).
	NetNS string
	// Foreground runs the tunnel in this process (root) instead of asking
	// the service: --foreground, or any flag only a foreground tunnel has.
	Foreground bool
	// Socket is the service's socket (--socket, CODERVPN_SOCKET).
	Socket string
	// Follow keeps printing the status after connecting (service mode).
	Follow bool
	// Persist asks the service to keep the login across restarts.
	Persist bool
}

// parseUpFlags reads `up`'s flags, with the Coder CLI's environment
// variables as fallbacks (a flag wins). Every error says what to do.
func parseUpFlags(args []string, getenv func(string) string, usageOut io.Writer) (upConfig, error) {
	cfg := upConfig{}
	fs := flag.NewFlagSet("codervpn up", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		rawURL, token, level, netns string
		headers                     headerFlag
	)
	fs.StringVar(&rawURL, "url", "", "the Coder deployment's URL (env CODER_URL)")
	fs.StringVar(&token, "token", "", "the session token (env CODER_SESSION_TOKEN)")
	fs.Var(&headers, "header", "an extra HTTP `header` 'Name: value' for every request to the deployment; repeatable (env CODER_HEADER, comma separated)")
	fs.StringVar(&cfg.TunName, "tun-name", "coder0", "the name of the TUN interface to create")
	fs.StringVar(&level, "log-level", "warn", "the lowest level of tunnel log shown on stderr: debug, info, warn or error")
	fs.BoolVar(&cfg.JSON, "json", false, "print one JSON event per line on stdout instead of the status table")
	fs.StringVar(&cfg.Backend, "backend", backendInProcess, "where the tunnel runs: inprocess, daemon (a child process) or dylib (libcodervpn.so through the C host)")
	fs.StringVar(&cfg.Lib, "lib", "", "with --backend=dylib: path of libcodervpn.so (default: next to this executable)")
	fs.StringVar(&cfg.DLHost, "dlhost", "", "with --backend=dylib: path of the dlhost C host (default: next to this executable)")
	fs.StringVar(&netns, "netns", "", "create the TUN in this network namespace (a name from 'ip netns list', or a path) instead of this process's")
	fs.BoolVar(&cfg.Foreground, "foreground", false, "run the tunnel in this process (needs root) instead of asking the codervpn service")
	fs.StringVar(&cfg.Socket, "socket", "", "the codervpn service's socket (env CODERVPN_SOCKET; default "+defaultSocket+")")
	fs.BoolVar(&cfg.Follow, "follow", false, "with the service: keep printing the status after connecting, until Ctrl-C")
	fs.BoolVar(&cfg.Persist, "persist", false, "with the service: keep the login so the tunnel comes back after a reboot (until `codervpn down`)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usageOut, "codervpn up [flags]",
				"Connects to a Coder deployment and puts its workspaces on this machine's network\n"+
					"until Ctrl-C or SIGTERM, which disconnects and removes everything it configured.", fs)
			return cfg, errHelp
		}
		return cfg, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return cfg, usagef("unexpected argument %q: `up` takes only flags", fs.Arg(0))
	}
	if headers.err != nil {
		return cfg, &usageError{msg: headers.err.Error()}
	}

	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "tun-name", "backend", "lib", "dlhost", "netns":
			cfg.Foreground = true
		}
	})
	if cfg.Socket == "" {
		cfg.Socket = getenv("CODERVPN_SOCKET")
	}
	if cfg.Socket == "" {
		cfg.Socket = defaultSocket
	}

	if rawURL == "" {
		rawURL = getenv("CODER_URL")
	}
	if token == "" {
		token = getenv("CODER_SESSION_TOKEN")
	}
	// Without a URL or a token, the login the user already has from
	// `coder login`.
	if rawURL == "" || strings.TrimSpace(token) == "" {
		login, lerr := readCoderLogin(getenv)
		switch {
		case rawURL == "" && lerr != nil:
			return cfg, usagef("no deployment URL: pass --url https://coder.example.com or set CODER_URL; %v", lerr)
		case rawURL == "":
			rawURL, token = login.URL, login.Token
		case lerr == nil && strings.TrimSuffix(login.URL, "/") == strings.TrimSuffix(strings.TrimSpace(rawURL), "/"):
			token = login.Token
		}
	}
	u, err := checkURL(rawURL)
	if err != nil {
		return cfg, err
	}
	cfg.URL = u

	if strings.TrimSpace(token) == "" {
		return cfg, usagef("no session token: pass --token or set CODER_SESSION_TOKEN (create one with `coder tokens create`), or run `coder login %s`", u.Redacted())
	}
	if strings.ContainsAny(token, "\r\n") {
		return cfg, usagef("the session token contains a line break; copy it again without one")
	}
	cfg.Token = strings.TrimSpace(token)

	cfg.Headers = headers.headers
	if len(cfg.Headers) == 0 {
		if cfg.Headers, err = parseHeaderList(getenv("CODER_HEADER")); err != nil {
			return cfg, usagef("CODER_HEADER: %v", err)
		}
	}
	if err := checkTunName(cfg.TunName); err != nil {
		return cfg, err
	}
	if cfg.LogLevel, err = parseLogLevel(level); err != nil {
		return cfg, err
	}
	switch cfg.Backend {
	case backendInProcess, backendDaemon, backendDylib:
	default:
		return cfg, usagef("--backend %q: choose inprocess, daemon or dylib", cfg.Backend)
	}
	if (cfg.Lib != "" || cfg.DLHost != "") && cfg.Backend != backendDylib {
		return cfg, usagef("--lib and --dlhost only apply with --backend=dylib")
	}
	if cfg.NetNS, err = netnsPath(netns); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// checkURL accepts what a person pastes from the browser: an http(s) URL
// with a host. The path is kept (a deployment may live under one).
func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, usagef("--url %q is not a URL: %v", raw, errors.Unwrap(err))
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, usagef("--url %q must start with https:// (or http://)", raw)
	}
	if u.Hostname() == "" {
		return nil, usagef("--url %q has no host name", raw)
	}
	return u, nil
}

// checkTunName applies the kernel's rules for interface names, so that a bad
// name is a usage error rather than an ioctl failure after other work.
func checkTunName(name string) error {
	switch {
	case name == "":
		return usagef("--tun-name must not be empty")
	case len(name) > 15:
		return usagef("--tun-name %q is longer than the kernel's 15-byte limit for interface names", name)
	case name == "." || name == "..":
		return usagef("--tun-name %q is not a valid interface name", name)
	case strings.ContainsAny(name, "/: \t\n"):
		return usagef("--tun-name %q must not contain '/', ':' or whitespace", name)
	}
	return nil
}

// netnsPath turns --netns into the path of the namespace's file: a bare name
// is looked up where `ip netns add` puts it.
func netnsPath(s string) (string, error) {
	switch {
	case s == "":
		return "", nil
	case filepath.IsAbs(s):
		return s, nil
	case strings.ContainsAny(s, "/ \t\n") || s == "." || s == "..":
		return "", usagef("--netns %q: give a namespace name from `ip netns list` or an absolute path", s)
	}
	return "/run/netns/" + s, nil
}

// logLevel is a --log-level, in the two forms it is compared with: the
// protocol's (for Log messages) and slog's (for the daemon's own logger).
type logLevel struct {
	Name  string
	Proto vpnpb.Log_Level
	Slog  slog.Level
}

func parseLogLevel(s string) (logLevel, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return logLevel{"debug", vpnpb.Log_DEBUG, slog.LevelDebug}, nil
	case "info", "":
		return logLevel{"info", vpnpb.Log_INFO, slog.LevelInfo}, nil
	case "warn", "warning":
		return logLevel{"warn", vpnpb.Log_WARN, slog.LevelWarn}, nil
	case "error":
		return logLevel{"error", vpnpb.Log_ERROR, slog.LevelError}, nil
	}
	return logLevel{}, usagef("--log-level %q: choose debug, info, warn or error", s)
}

// printUsage writes a command's synopsis, description and flags.
func printUsage(w io.Writer, synopsis, desc string, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags:\n", synopsis, desc)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// reportCLIError prints a command-line error the way every subcommand does.
func reportCLIError(cmd string, err error, stderr io.Writer) int {
	if errors.Is(err, errHelp) {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "codervpn %s: %v\nRun 'codervpn %s --help' for usage.\n", cmd, err, cmd)
		return exitUsage
	}
	fmt.Fprintf(stderr, "codervpn %s: %v\n", cmd, err)
	return exitError
}
