package main

import (
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
	"github.com/codervpn/codervpn/internal/dlhost"
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
	select {
	case <-c.exited:
	case <-ctx.Done():
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s did not exit in time and was killed", c.name)
	}
	if c.err != nil {
		return describeFailure(c.name, c.err, c.stderr)
	}
	return nil
}

// describeFailure says that the tunnel process name failed with err, with
// the last line it printed on stderr.
func describeFailure(name string, err error, stderr *tailBuffer) error {
	msg := fmt.Sprintf("%s failed: %v", name, err)
	if tail := strings.TrimSpace(stderr.String()); tail != "" {
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

// startDylib loads libcodervpn.so in the C host and has it call
// coderStartVPN on the fds it is sent, exactly as the macOS
// NetworkExtension calls it. The C host gets fds of its own (SCM_RIGHTS)
// and closes them after the call; ours go once it has them.
func startDylib(cfg backendConfig, tun, tunR, tunW *os.File) (tunnelProc, error) {
	defer tunR.Close()
	defer tunW.Close()
	lib, host, err := libFiles(cfg.Lib, cfg.DLHost)
	if err != nil {
		return nil, err
	}
	p := &dylibProc{stderr: &tailBuffer{max: 16 << 10}}
	if p.h, err = dlhost.Start(host, lib, nil, p.stderr); err != nil {
		return nil, fmt.Errorf("start %s: %w", dylibHostName, err)
	}
	rc, err := p.h.StartVPN(tun, tunR, tunW)
	if err == nil && rc < 0 {
		err = fmt.Errorf("coderStartVPN returned %d%s", rc, codeMeaning(rc))
	}
	if err != nil {
		p.h.Kill()
		return nil, describeFailure(dylibHostName, err, p.stderr)
	}
	p.handle = rc
	if cfg.OnHandle != nil {
		cfg.OnHandle(int(rc))
	}
	return p, nil
}

// dylibHostName names the C host in messages.
const dylibHostName = "the C host (dlhost with libcodervpn.so)"

// dylibProc is a tunnel in libcodervpn.so inside the C host.
type dylibProc struct {
	h      *dlhost.Host
	handle int32
	stderr *tailBuffer
}

func (p *dylibProc) Exited() <-chan struct{} { return p.h.Exited() }

// Wait has the C host call coderStopVPN and exit, as the NetworkExtension
// is torn down, or kills it when ctx ends first.
func (p *dylibProc) Wait(ctx context.Context) error {
	var stopErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-p.h.Exited(): // it died on its own: its exit says why
			return
		default:
		}
		rc, err := p.h.StopVPN(p.handle)
		if err == nil && rc != 0 {
			err = fmt.Errorf("coderStopVPN returned %q%s", strconv.Itoa(int(rc)), codeMeaning(rc))
		}
		stopErr = err
		_ = p.h.Close()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		p.h.Kill()
		<-done
		return fmt.Errorf("%s did not exit in time and was killed", dylibHostName)
	}
	if err := p.h.ExitError(); err != nil {
		return describeFailure(dylibHostName, err, p.stderr)
	}
	return stopErr
}

// codeMeaning names a C ABI return code: " (bad read fd)".
func codeMeaning(rc int32) string {
	if c, ok := abi.Lookup(rc); ok {
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
