package linuxnet

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// CreateTUN creates (or attaches to) the TUN interface name in the calling
// thread's network namespace and returns its fd. The device is opened with
// IFF_TUN|IFF_NO_PI, the raw-IP framing the tunnel core expects, and is not
// persistent: the kernel deletes it, with every address and route on it, once
// the last fd referring to it (ours or a child's copy) is closed. That is the
// backstop that leaves nothing behind even when the process is killed.
func CreateTUN(name string) (*os.File, error) {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("TUN name %q must be 1 to %d bytes long", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, tunError(name, "open /dev/net/tun", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, tunError(name, "create TUN device", err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+ifr.Name()), nil
}

// CreateTUNIn creates the TUN interface name inside the network namespace ns
// and returns its fd, which keeps working from any namespace: a process in the
// root namespace (where the deployment and DERP are reachable) can carry the
// packets of a device that only the namespace sees. The calling goroutine's
// namespace is not changed.
func CreateTUNIn(ns netns.NsHandle, name string) (*os.File, error) {
	ch := make(chan tunResult, 1)
	// A fresh goroutine on a locked thread: if switching back fails, the
	// goroutine exits still locked and the runtime discards the thread, so no
	// other goroutine ever runs in the wrong namespace.
	go func() { ch <- createTUNIn(ns, name) }()
	r := <-ch
	return r.f, r.err
}

type tunResult struct {
	f   *os.File
	err error
}

// createTUNIn is CreateTUNIn's work on its own goroutine. It closes the
// handle on the original namespace before it returns, so that the caller,
// once it has the result, holds no fd of ours but the TUN's.
func createTUNIn(ns netns.NsHandle, name string) (res tunResult) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		res.err = fmt.Errorf("get current network namespace: %w", err)
		return res
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		res.err = fmt.Errorf("enter network namespace: %w", err)
		return res
	}
	f, err := CreateTUN(name)
	if rerr := netns.Set(orig); rerr != nil {
		if f != nil {
			f.Close()
		}
		res.err = fmt.Errorf("return to the original network namespace: %w", rerr)
		return res // the thread stays locked and is thrown away
	}
	runtime.UnlockOSThread()
	res.f, res.err = f, err
	return res
}

// tunError turns the errno of a TUN operation into advice a person can act on.
func tunError(name, op string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%s %s: %w: run as root, or grant the capability with `sudo setcap cap_net_admin+ep %s`",
			op, name, err, exe())
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV):
		return fmt.Errorf("%s %s: %w: the kernel has no TUN support loaded; run `sudo modprobe tun`", op, name, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%s %s: %w: an interface named %s is in use; is another codervpn running? (choose another with --tun-name)",
			op, name, err, name)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("%s %s: %w: an interface named %s exists and is not a TUN device (choose another with --tun-name)",
			op, name, err, name)
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}

func exe() string {
	p, err := os.Executable()
	if err != nil {
		return "codervpn"
	}
	return p
}
