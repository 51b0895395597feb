// Command codertunnel is the bench's baseline: Coder's own tunnel (the
// pinned module's vpn.NewTunnel) in a process of its own, driven over the
// same three fds our library gets from its host, so that `make bench` can
// put the two side by side with CPU, context switches and memory counted
// per process.
//
// It is built by the bench only; cmd/codervpn's deps test checks that the
// shipped binaries never link it.
//
// Usage: codertunnel, with fd 3 the tunnel's end of a utun-framed
// socketpair, fd 4 the pipe it reads ManagerMessages from and fd 5 the pipe
// it writes TunnelMessages to. It runs until SIGTERM or SIGINT.
// CODERTUNNEL_PROFILE=dir,delay,window[,kinds] profiles it over a window
// (internal/profwindow), as CODERVPN_PROFILE does the profiling build of
// our library, so that the bench can profile both tunnels over the same
// part of a run.
//
// What it sets up is what `coder vpn-daemon run` does on macOS (a debug
// logger whose records go to the manager, vpn.UseAsLogger), with the
// networking stack Coder's macOS code builds for a NetworkExtension's utun
// fd: the manager applies the routes and DNS (vpn.NewRouter,
// vpn.NewDNSConfigurator) and the device is a dup of the fd, read and
// written one packet per system call as wireguard-go's macOS device does.
// The module's own code for that is darwin-only, so the device is
// re-created here from that description (device.go).
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"cdr.dev/slog/v3"
	"golang.org/x/sys/unix"

	"github.com/coder/coder/v2/vpn"

	"github.com/codervpn/codervpn/internal/profwindow"
)

// The fds the parent hands over (exec.Cmd.ExtraFiles).
const (
	tunFD      = 3
	rpcReadFD  = 4
	rpcWriteFD = 5
)

// profileEnv asks for a profile window, delay counted from the start.
const profileEnv = "CODERTUNNEL_PROFILE"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "codertunnel:", err)
		os.Exit(1)
	}
}

func run() error {
	// At SIGTERM the bench ends the process: the profile window ends early
	// so that the files keep what was recorded.
	finishProfile, err := profwindow.Start(profileEnv)
	if err != nil {
		return err
	}
	defer finishProfile() // last: the window may cover the tunnel's close
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pipe, err := vpn.NewBidirectionalPipe(rpcReadFD, rpcWriteFD)
	if err != nil {
		return fmt.Errorf("the RPC pipes on fds %d and %d: %w", rpcReadFD, rpcWriteFD, err)
	}
	defer pipe.Close()
	client := &utunClient{inner: vpn.NewClient()}
	tunnel, err := vpn.NewTunnel(ctx, slog.Make().Leveled(slog.LevelDebug), pipe, client, vpn.UseAsLogger())
	if err != nil {
		return fmt.Errorf("vpn.NewTunnel: %w", err)
	}
	client.tunnel.Store(tunnel)
	defer tunnel.Close()
	<-ctx.Done()
	return nil
}

// utunClient is vpn.NewClient with the networking stack of Coder's macOS
// build for a NetworkExtension: the device on a dup of the utun fd, routes
// and DNS sent to the manager. The tunnel's own option for that
// (UseOSNetworkingStack) creates a kernel TUN on Linux instead.
type utunClient struct {
	inner  vpn.Client
	tunnel atomic.Pointer[vpn.Tunnel] // set before the manager can send a StartRequest
}

// NewConn is called once per StartRequest.
func (c *utunClient) NewConn(ctx context.Context, u *url.URL, token string, o *vpn.Options) (vpn.Conn, error) {
	t := c.tunnel.Load()
	if t == nil {
		return nil, fmt.Errorf("StartRequest before the tunnel was made")
	}
	fd, err := unix.Dup(tunFD)
	if err != nil {
		return nil, fmt.Errorf("dup the utun fd %d: %w", tunFD, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("make the utun fd non-blocking: %w", err)
	}
	o.TUNDevice = newUtunDevice(os.NewFile(uintptr(fd), "utun"))
	o.Router = vpn.NewRouter(t)
	o.DNSConfigurator = vpn.NewDNSConfigurator(t)
	return c.inner.NewConn(ctx, u, token, o)
}
