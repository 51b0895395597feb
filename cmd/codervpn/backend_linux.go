package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/codervpn/codervpn/internal/abi"
	"github.com/codervpn/codervpn/vpnlib"
)

// tunnelProc is the tunnel side of a session, wherever it runs: in this
// process, in a `codervpn daemon` child, or in libcodervpn.so inside the C
// host. The manager only ever talks to it through the pipes; this is what is
// left: knowing when it is gone, and making sure it is.
type tunnelProc interface {
	// Exited is closed once the tunnel side has ended by itself.
	Exited() <-chan struct{}
	// Wait lets the tunnel side finish (after a Stop, or once the manager
	// hung up) and releases it; when ctx ends first, it is forced to end.
	// The error says what went wrong on that side, if anything.
	Wait(ctx context.Context) error
}

// backendConfig says where to run the tunnel.
type backendConfig struct {
	Kind        string // backendInProcess, backendDaemon or backendDylib
	Lib, DLHost string // for backendDylib; empty: next to this executable
	LogLevel    logLevel
	// OnHandle is told the handle coderStartVPN returned (dylib only).
	OnHandle func(h int)
}

// startTunnel starts the tunnel on tun and returns the manager's ends of
// the pipe pair: it reads TunnelMessages from mgrR and writes
// ManagerMessages to mgrW.
func startTunnel(cfg backendConfig, tun *os.File) (mgrR, mgrW *os.File, proc tunnelProc, err error) {
	// os.Pipe gives non-blocking, poller-backed ends, so closing our ends
	// unblocks any Read or Write in progress.
	tunR, mgrW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create the manager→tunnel pipe: %w", err)
	}
	mgrR, tunW, err := os.Pipe()
	if err != nil {
		tunR.Close()
		mgrW.Close()
		return nil, nil, nil, fmt.Errorf("create the tunnel→manager pipe: %w", err)
	}
	switch cfg.Kind {
	case backendDaemon:
		proc, err = startDaemon(cfg, tun, tunR, tunW)
	case backendDylib:
		proc, err = startDylib(cfg, tun, tunR, tunW)
	default:
		proc, err = startInProcess(cfg, tun, tunR, tunW)
	}
	if err != nil {
		mgrR.Close()
		mgrW.Close()
		return nil, nil, nil, err
	}
	return mgrR, mgrW, proc, nil
}

// inProcess runs vpnlib's tunnel on goroutines of this process.
type inProcess struct{ t *vpnlib.Tunnel }

func startInProcess(cfg backendConfig, tun, tunR, tunW *os.File) (tunnelProc, error) {
	t, err := vpnlib.NewTunnel(vpnlib.TunnelConfig{
		TunFD:    int(tun.Fd()), // the tunnel works on a dup
		RPCRead:  tunR,
		RPCWrite: tunW,
		// Logs reach the person through the protocol's Log messages, which
		// the manager forwards; a local copy would print everything twice.
		LogLevel: cfg.LogLevel.Slog,
	})
	if err != nil {
		return nil, fmt.Errorf("start the tunnel in this process: %w", err)
	}
	return inProcess{t}, nil
}

func (p inProcess) Exited() <-chan struct{} { return p.t.Done() }

func (p inProcess) Wait(ctx context.Context) error {
	select {
	case <-p.t.Done():
	case <-ctx.Done():
	}
	_ = p.t.Close() // waits for every goroutine and fd of the tunnel
	return p.t.Err()
}

// child is a tunnel running in another process.
type child struct {
	name   string
	cmd    *exec.Cmd
	stderr *tailBuffer
	exited chan struct{}
	err    error // set before exited closes
	// beforeWait, if set, asks the child to finish (closing the C host's stdin).
	beforeWait func()
	// check, if set, judges a clean exit (the C host's stop code).
	check func() error
}

// startChild starts cmd in its own process group, so that Ctrl-C in the
// terminal reaches only us: the manager decides when the tunnel stops.
// The child gets SIGTERM if we die without stopping it.
func startChild(name string, cmd *exec.Cmd, closeAfter ...*os.File) (*child, error) {
	c := &child{name: name, cmd: cmd, stderr: &tailBuffer{max: 16 << 10}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	err := cmd.Start()
	// The child has its copies; ours must go, or we would never read EOF
	// from a tunnel that exits.
	for _, f := range closeAfter {
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) Exited() <-chan struct{} { return c.exited }

func (c *child) Wait(ctx context.Context) error {
	if c.beforeWait != nil {
		c.beforeWait()
	}
	select {
	case <-c.exited:
	case <-ctx.Done():
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s did not exit in time and was killed", c.name)
	}
	if c.err != nil {
		return c.exitError()
	}
	if c.check != nil {
		return c.check()
	}
	return nil
}

// exitError describes a failed child with the end of what it printed.
func (c *child) exitError() error {
	msg := fmt.Sprintf("%s failed: %v", c.name, c.err)
	if tail := strings.TrimSpace(c.stderr.String()); tail != "" {
		lines := strings.Split(tail, "\n")
		msg += "; its last words: " + lines[len(lines)-1]
	}
	return errors.New(msg)
}

func startDaemon(cfg backendConfig, tun, tunR, tunW *os.File) (tunnelProc, error) {
	self, err := os.Executable()
	if err != nil {
		tunR.Close()
		tunW.Close()
		return nil, fmt.Errorf("find this executable to run the daemon: %w", err)
	}
	// ExtraFiles become fds 3, 4, 5 in the child.
	cmd := exec.Command(self, "daemon", "--rpc-read-fd", "3", "--rpc-write-fd", "4", "--tun-fd", "5",
		"--log-level", cfg.LogLevel.Name)
	cmd.ExtraFiles = []*os.File{tunR, tunW, tun}
	c, err := startChild("the tunnel daemon", cmd, tunR, tunW)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// libFiles finds libcodervpn.so and the C host: the flags, else next to
// this executable, where `make` puts all three.
func libFiles(lib, host string) (string, string, error) {
	self, err := os.Executable()
	if err != nil && (lib == "" || host == "") {
		return "", "", fmt.Errorf("find this executable to locate libcodervpn.so and dlhost: %w", err)
	}
	if lib == "" {
		lib = filepath.Join(filepath.Dir(self), "libcodervpn.so")
	}
	if host == "" {
		host = filepath.Join(filepath.Dir(self), "dlhost")
	}
	// dlopen searches the library path for a name without a slash.
	if lib, err = filepath.Abs(lib); err != nil {
		return "", "", fmt.Errorf("locate libcodervpn.so: %w", err)
	}
	if _, err := os.Stat(lib); err != nil {
		return "", "", fmt.Errorf("libcodervpn.so not found at %s: build it with `make dylib`, or pass --lib", lib)
	}
	if st, err := os.Stat(host); err != nil || st.Mode()&0o111 == 0 {
		return "", "", fmt.Errorf("the C host dlhost was not found (or is not executable) at %s: build it with `make dlhost`, or pass --dlhost", host)
	}
	return lib, host, nil
}

// startDylib loads libcodervpn.so in the C host, which calls coderStartVPN on
// the fds it inherits, exactly as the macOS NetworkExtension calls it.
func startDylib(cfg backendConfig, tun, tunR, tunW *os.File) (tunnelProc, error) {
	lib, host, err := libFiles(cfg.Lib, cfg.DLHost)
	if err != nil {
		tunR.Close()
		tunW.Close()
		return nil, err
	}
	cmd := exec.Command(host, lib, "run", "3", "4", "5")
	cmd.ExtraFiles = []*os.File{tun, tunR, tunW}
	stdin, err := cmd.StdinPipe() // closing it makes the host call coderStopVPN
	if err != nil {
		tunR.Close()
		tunW.Close()
		return nil, fmt.Errorf("make the C host's stdin: %w", err)
	}
	// Our own pipe rather than StdoutPipe: Wait must not close it before the
	// last line ("stop=0") has been read.
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		tunR.Close()
		tunW.Close()
		return nil, fmt.Errorf("make the C host's stdout: %w", err)
	}
	cmd.Stdout = stdoutW
	c, err := startChild("the C host (dlhost with libcodervpn.so)", cmd, tunR, tunW, stdoutW)
	if err != nil {
		stdout.Close()
		return nil, err
	}
	var (
		mu             sync.Mutex
		handle, stopRC = "", ""
		readDone       = make(chan struct{})
	)
	go func() {
		defer close(readDone)
		defer stdout.Close()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), "=")
			mu.Lock()
			switch k {
			case "handle":
				handle = v
				if h, err := strconv.Atoi(v); err == nil && h >= 0 && cfg.OnHandle != nil {
					cfg.OnHandle(h)
				}
			case "stop":
				stopRC = v
			}
			mu.Unlock()
		}
	}()
	c.beforeWait = func() { _ = stdin.Close() }
	c.check = func() error {
		<-readDone
		mu.Lock()
		defer mu.Unlock()
		if h, err := strconv.Atoi(handle); err != nil || h < 0 {
			return fmt.Errorf("coderStartVPN returned %s%s", handle, codeMeaning(handle))
		}
		if stopRC != "0" {
			return fmt.Errorf("coderStopVPN returned %q%s", stopRC, codeMeaning(stopRC))
		}
		return nil
	}
	return c, nil
}

// codeMeaning names a C ABI return code.
func codeMeaning(s string) string {
	n, err := strconv.Atoi(s)
	if err != nil {
		return ""
	}
	if c, ok := abi.Lookup(int32(n)); ok { //nolint:gosec // small codes
		return " (" + c.Brief + ")"
	}
	return ""
}

// tailBuffer keeps the last max bytes written to it: a child's stderr, shown
// only if the child fails, so a healthy run prints nothing twice.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

var _ io.Writer = (*tailBuffer)(nil)
