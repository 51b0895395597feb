package abi

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"cdr.dev/slog/v3"

	"github.com/codervpn/codervpn/vpnlib"
)

// Registry is the table of tunnels behind the C ABI: coderStartVPN adds one
// and returns its handle, coderStopVPN removes it. It owns duplicates of the
// fds it was given, so the caller may close its own at any time. The zero
// value is ready; methods are safe for concurrent use.
type Registry struct {
	// Logger gets every tunnel's local logs (vpnlib.TunnelConfig.Logger):
	// the C ABI's log callback. Set it before the first Start.
	Logger slog.Logger

	mu      sync.Mutex
	tunnels map[int32]*registered
	last    int32
}

// registered is one tunnel and the tun fd duplicate the registry holds for
// it (the device holds a duplicate of its own).
type registered struct {
	tunnel   *vpnlib.Tunnel
	released chan struct{} // closed once the tun duplicate is closed
}

// Start validates and duplicates the fds, starts a tunnel on the duplicates
// and returns its handle (>= 1), or a negative Code. It does not wait for the
// handshake: the tunnel runs in the background until Stop, or until the
// manager stops it or hangs up. tunFD -1 means the tunnel takes the fd from
// StartRequest.tunnel_file_descriptor.
func (r *Registry) Start(tunFD, readFD, writeFD int) int32 {
	if !fdAccess(readFD, unix.O_RDONLY) {
		return CodeBadReadFD
	}
	if !fdAccess(writeFD, unix.O_WRONLY) {
		return CodeBadWriteFD
	}
	if tunFD != -1 && !fdAccess(tunFD, unix.O_RDWR) {
		return CodeBadTunFD
	}
	h, ok := r.reserve()
	if !ok {
		return CodeTooManyTunnels
	}
	reg, err := r.newTunnel(tunFD, readFD, writeFD)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		delete(r.tunnels, h)
		return CodeStartFailed
	}
	r.tunnels[h] = reg
	return h
}

// reserve takes a handle and a slot; the slot holds nil until the tunnel is
// made, so concurrent Starts cannot overshoot MaxTunnels.
func (r *Registry) reserve() (int32, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tunnels == nil {
		r.tunnels = make(map[int32]*registered)
	}
	if len(r.tunnels) >= MaxTunnels {
		return 0, false
	}
	r.last++
	r.tunnels[r.last] = nil
	return r.last, true
}

// newTunnel duplicates the fds and starts the tunnel; on error nothing it
// made stays open.
func (r *Registry) newTunnel(tunFD, readFD, writeFD int) (reg *registered, err error) {
	var opened []int
	defer func() {
		if err != nil {
			for _, fd := range opened {
				_ = unix.Close(fd)
			}
		}
	}()
	dup := func(fd int) (int, error) {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("dup fd %d: %w", fd, err)
		}
		opened = append(opened, d)
		return d, nil
	}
	rd, err := dup(readFD)
	if err != nil {
		return nil, err
	}
	wr, err := dup(writeFD)
	if err != nil {
		return nil, err
	}
	tun := -1
	if tunFD >= 0 {
		if tun, err = dup(tunFD); err != nil {
			return nil, err
		}
	}
	// Non-blocking pipe ends go through Go's poller, so closing them
	// unblocks a read at once. The flag is shared with the caller's fds.
	for _, fd := range []int{rd, wr} {
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, fmt.Errorf("set fd %d non-blocking: %w", fd, err)
		}
	}
	t, err := vpnlib.NewTunnel(vpnlib.TunnelConfig{
		TunFD:    tun,
		RPCRead:  os.NewFile(uintptr(rd), "codervpn-rpc-read"),
		RPCWrite: os.NewFile(uintptr(wr), "codervpn-rpc-write"),
		Logger:   r.Logger,
	}) // owns rd and wr from here on, even on error
	opened = opened[2:]
	if err != nil {
		return nil, err
	}
	reg = &registered{tunnel: t, released: make(chan struct{})}
	go func() {
		// The device works on a duplicate of its own; ours goes as soon as
		// the session is over, so the host's utun can disappear even before
		// it calls stop.
		<-t.Done()
		if tun >= 0 {
			_ = unix.Close(tun)
		}
		close(reg.released)
	}()
	return reg, nil
}

// Stop stops the tunnel behind handle h, closes every fd it owns, waits for
// all of its goroutines and forgets the handle. It returns 0, or
// CodeUnknownHandle for a handle Start never returned or that was stopped.
func (r *Registry) Stop(h int32) int32 {
	r.mu.Lock()
	reg, ok := r.tunnels[h]
	if ok && reg != nil {
		delete(r.tunnels, h)
	}
	r.mu.Unlock()
	if reg == nil { // unknown, or a Start still making it
		return CodeUnknownHandle
	}
	_ = reg.tunnel.Close()
	<-reg.released
	return 0
}

// fdAccess reports whether fd is open and allows the access mode want
// (O_RDONLY, O_WRONLY or O_RDWR; an O_RDWR fd allows every mode).
func fdAccess(fd int, want int) bool {
	if fd < 0 {
		return false
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return false
	}
	mode := fl & unix.O_ACCMODE
	return mode == want || mode == unix.O_RDWR
}
