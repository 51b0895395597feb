package dlhost

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CallTimeout bounds each command; coderStopVPN of a running tunnel takes
// milliseconds, so this only matters when the host is stuck.
const CallTimeout = 2 * time.Minute

// Host is one running C host process with the library loaded.
type Host struct {
	cmd     *exec.Cmd
	conn    *net.UnixConn
	exited  chan struct{}
	waitErr error      // how the process ended; set before exited closes
	mu      sync.Mutex // one command at a time
}

// Start runs hostPath with libPath loaded. env, if not nil, replaces the
// environment; out receives the host's stdout and stderr (nil discards).
//
// The host runs in its own process group, so a Ctrl-C in the terminal
// reaches only its parent, which decides when the tunnels stop. It needs no
// signal to follow a parent that dies: its control socket then reads end
// of file, and it exits.
func Start(hostPath, libPath string, env []string, out io.Writer) (*Host, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "dlhost-ctl"), os.NewFile(uintptr(fds[1]), "dlhost-ctl-peer")
	defer ours.Close()
	h := &Host{exited: make(chan struct{})}
	h.cmd = exec.Command(hostPath, libPath, "serve", "3")
	h.cmd.ExtraFiles = []*os.File{theirs}
	h.cmd.Env = env
	h.cmd.Stdout, h.cmd.Stderr = out, out
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = h.cmd.Start()
	theirs.Close()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", hostPath, err)
	}
	go func() {
		h.waitErr = h.cmd.Wait()
		close(h.exited)
	}()
	c, err := net.FileConn(ours)
	if err != nil {
		_ = h.cmd.Process.Kill()
		<-h.exited
		return nil, fmt.Errorf("control socket: %w", err)
	}
	h.conn = c.(*net.UnixConn)
	return h, nil
}

// Pid is the C host's process id, for reading its /proc entries.
func (h *Host) Pid() int { return h.cmd.Process.Pid }

// Exited is closed once the C host process has exited, for whatever reason.
func (h *Host) Exited() <-chan struct{} { return h.exited }

// ExitError says how the process ended once Exited is closed: nil for a
// clean exit, else the *exec.ExitError (a status, or the signal that
// killed it). Before that it is nil.
func (h *Host) ExitError() error {
	select {
	case <-h.exited:
		return h.waitErr
	default:
		return nil
	}
}

// Kill ends the process at once and waits for it; its tunnels go with it.
func (h *Host) Kill() {
	_ = h.cmd.Process.Kill()
	<-h.exited
	_ = h.conn.Close()
}

// Call sends one command with files attached and returns what followed "ok"
// in the reply. A reply starting "err", or the host dying, is an error.
func (h *Host) Call(command string, files ...*os.File) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	_ = h.conn.SetDeadline(time.Now().Add(CallTimeout))
	if _, _, err := h.conn.WriteMsgUnix([]byte(command), oob, nil); err != nil {
		return "", fmt.Errorf("send %q to the C host: %w", command, err)
	}
	buf := make([]byte, 4096)
	n, _, _, _, err := h.conn.ReadMsgUnix(buf, nil)
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err != nil {
		return "", fmt.Errorf("no reply to %q from the C host: %w", command, err)
	}
	reply := string(buf[:n])
	rest, ok := strings.CutPrefix(reply, "ok")
	if !ok {
		return "", fmt.Errorf("the C host answered %q to %q", reply, command)
	}
	return strings.TrimSpace(rest), nil
}

// StartVPN calls coderStartVPN(tun, read, write) in the host and returns its
// result. Each argument is an *os.File (attached, so the host gets an fd of
// its own) or an int passed as is (-1, or a deliberately bad number).
func (h *Host) StartVPN(tun, read, write any) (int32, error) {
	var words []string
	var files []*os.File
	for _, a := range []any{tun, read, write} {
		switch v := a.(type) {
		case *os.File:
			words = append(words, "fd")
			files = append(files, v)
		case int:
			words = append(words, strconv.Itoa(v))
		default:
			return 0, fmt.Errorf("StartVPN argument of type %T", a)
		}
	}
	out, err := h.Call("start "+strings.Join(words, " "), files...)
	if err != nil {
		return 0, err
	}
	return parseRC(out)
}

// StopVPN calls coderStopVPN(handle) in the host and returns its result.
func (h *Host) StopVPN(handle int32) (int32, error) {
	out, err := h.Call(fmt.Sprintf("stop %d", handle))
	if err != nil {
		return 0, err
	}
	return parseRC(out)
}

func parseRC(s string) (int32, error) {
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("C host return code %q: %w", s, err)
	}
	return int32(v), nil
}

// Stats is what the C host reports about its own process.
type Stats struct {
	FDs int
	// RSSKB is the resident set; HWMKB its peak (VmHWM).
	RSSKB, HWMKB int64
	// AnonKB is the anonymous part of RSS (heap, stacks): the memory that is
	// the process's own, as opposed to the library's file pages, which the
	// system can drop and re-read at will.
	AnonKB int64
}

// Stats asks the host for its fd count and memory.
func (h *Host) Stats() (Stats, error) {
	out, err := h.Call("stats")
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	if _, err := fmt.Sscanf(out, "fds=%d rss_kb=%d hwm_kb=%d anon_kb=%d", &s.FDs, &s.RSSKB, &s.HWMKB, &s.AnonKB); err != nil {
		return s, fmt.Errorf("parse C host stats %q: %w", out, err)
	}
	return s, nil
}

// FDs lists the host's open fds and what they point at, for messages.
func (h *Host) FDs() string {
	out, err := h.Call("fds")
	if err != nil {
		return err.Error()
	}
	return out
}

// Close asks the host to exit, kills it if it does not within 10 s, and
// returns an error unless it exited cleanly on its own.
func (h *Host) Close() error {
	select {
	case <-h.exited:
	default:
		_ = h.conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := h.conn.Write([]byte("quit")); err == nil {
			_, _ = h.conn.Read(make([]byte, 64))
		}
		select {
		case <-h.exited:
		case <-time.After(10 * time.Second):
			_ = h.cmd.Process.Kill()
			<-h.exited
			_ = h.conn.Close()
			return errors.New("the C host did not exit on quit and was killed")
		}
	}
	_ = h.conn.Close()
	if code := h.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("the C host exited with status %d", code)
	}
	return nil
}
