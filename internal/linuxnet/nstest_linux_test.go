package linuxnet

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// requireRoot skips tests that change the kernel's network state.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) to create network namespaces and TUN devices; run the tests as root")
	}
}

// newNetns creates an anonymous network namespace that lives as long as the
// returned handle (closed at cleanup), without moving the test's own threads
// into it: the namespace is made on a throwaway locked thread.
func newNetns(t *testing.T) (netns.NsHandle, *netlink.Handle) {
	t.Helper()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		ns, err := netns.New() // unshare(CLONE_NEWNET) on this thread
		if err != nil {
			orig.Close()
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		err = netns.Set(orig)
		orig.Close() // before the reply: the caller may count fds at once
		if err != nil {
			ch <- result{ns: ns, err: err} // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		ch <- result{ns: ns}
	}()
	r := <-ch
	if r.err != nil {
		if r.ns.IsOpen() {
			r.ns.Close()
		}
		t.Fatalf("create network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	h, err := netlink.NewHandleAt(r.ns)
	if err != nil {
		t.Fatalf("netlink handle in namespace: %v", err)
	}
	t.Cleanup(h.Close)
	return r.ns, h
}

// kernelFDs is the kinds of fd this package and its tests open: TUN
// devices, network namespace handles and netlink sockets. Leak checks
// compare these rather than every fd of the process, which the runtime and
// other goroutines open and close on their own.
func kernelFDs(fd int, target string) bool {
	switch {
	case target == "/dev/net/tun", strings.HasPrefix(target, "net:["):
		return true
	case strings.HasPrefix(target, "socket:["):
		domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		return err == nil && domain == unix.AF_NETLINK
	}
	return false
}
