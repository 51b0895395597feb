package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/codervpn/codervpn/internal/linuxnet"
)

// The laptop harness: the tunnel process runs in a network namespace of its
// own (the "laptop"), joined to the test's namespace (the "internet", where
// the deployment and the agents are) by veth pairs, so that a test can do to
// the laptop's network what happens to a real one: the link goes down, the
// address changes, UDP is filtered, another VPN takes the routes.

// subnetSeq and laptopSeq number the subnets and the laptops of one test
// process.
var subnetSeq, laptopSeq atomic.Int32

// linkStem is the start of every link name of this process: "cvl" and five
// digits of the pid, so two test processes do not collide and the longest
// name (stem + 3) fits the kernel's 15 bytes.
func linkStem() string { return fmt.Sprintf("cvl%05d", os.Getpid()%100000) }

// subnetOctet is a third octet for a fresh 10.213.X.0/24 or 10.214.X.0/24.
func subnetOctet() int { return (os.Getpid()*7+int(subnetSeq.Add(1)))%250 + 1 }

// ipRun runs ip(8) and fails t with its output on error.
func ipRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// ipCleanup runs ip(8) at cleanup, reporting failures.
func ipCleanup(t *testing.T, args ...string) {
	t.Cleanup(func() {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	})
}

// newInternetAddr gives the test's namespace an address, 10.214.X.1, on a
// veth pair of its own (this kernel may lack the dummy link type) rather
// than on a laptop's uplink, so the deployment listening there stays put
// while the laptop's uplinks come and go.
func newInternetAddr(t *testing.T) netip.Addr {
	t.Helper()
	a, b := linkStem()+"sa", linkStem()+"sb"
	addr := netip.AddrFrom4([4]byte{10, 214, byte(subnetOctet()), 1})
	ipRun(t, "link", "add", a, "type", "veth", "peer", "name", b)
	ipCleanup(t, "link", "delete", a)
	ipRun(t, "addr", "add", addr.String()+"/32", "dev", a)
	ipRun(t, "link", "set", a, "up")
	ipRun(t, "link", "set", b, "up")
	return addr
}

// laptop is a network namespace with uplinks to the test's namespace.
type laptop struct {
	t    *testing.T
	ns   string
	stem string
	n    int // uplinks made so far
}

// uplink is one veth pair: host in the test's namespace with gw, guest in
// the laptop with addr, both in a /24 of their own.
type uplink struct {
	host, guest string
	gw, addr    netip.Addr
}

// newLaptop makes the namespace (removed at cleanup) with its loopback up
// and one uplink carrying the default route.
func newLaptop(t *testing.T) (*laptop, uplink) {
	t.Helper()
	seq := laptopSeq.Add(1)
	l := &laptop{t: t, stem: fmt.Sprintf("%s%d", linkStem(), seq%10)}
	l.ns = fmt.Sprintf("cvl-%d-%d", os.Getpid(), seq)
	ipRun(t, "netns", "add", l.ns)
	ipCleanup(t, "netns", "delete", l.ns)
	l.ip("link", "set", "lo", "up")
	u := l.addUplink()
	l.ip("route", "add", "default", "via", u.gw.String(), "dev", u.guest)
	return l, u
}

// ip runs ip(8) inside the laptop.
func (l *laptop) ip(args ...string) {
	l.t.Helper()
	ipRun(l.t, append([]string{"-n", l.ns}, args...)...)
}

// addUplink adds a veth pair with a fresh subnet, both ends up, without a
// default route; deleting the host end (cleanup does) deletes both.
func (l *laptop) addUplink() uplink {
	l.t.Helper()
	x := byte(subnetOctet())
	u := uplink{
		host:  fmt.Sprintf("%sh%d", l.stem, l.n),
		guest: fmt.Sprintf("%sl%d", l.stem, l.n),
		gw:    netip.AddrFrom4([4]byte{10, 213, x, 1}),
		addr:  netip.AddrFrom4([4]byte{10, 213, x, 2}),
	}
	l.n++
	ipRun(l.t, "link", "add", u.host, "type", "veth", "peer", "name", u.guest, "netns", l.ns)
	l.t.Cleanup(func() { _ = exec.Command("ip", "link", "delete", u.host).Run() }) // gone already if a scenario deleted it
	ipRun(l.t, "addr", "add", u.gw.String()+"/24", "dev", u.host)
	ipRun(l.t, "link", "set", u.host, "up")
	l.ip("addr", "add", u.addr.String()+"/24", "dev", u.guest)
	l.ip("link", "set", u.guest, "up")
	return u
}

// otherVPN creates another VPN's TUN in the laptop and brings it up; the
// test holds its fd until cleanup and never reads it, so packets routed to
// it vanish. It returns the device's name; routes are the caller's.
func (l *laptop) otherVPN() string {
	l.t.Helper()
	name := l.stem + "v"
	h, err := netns.GetFromName(l.ns)
	if err != nil {
		l.t.Fatalf("open network namespace %s: %v", l.ns, err)
	}
	defer h.Close()
	f, err := linuxnet.CreateTUNIn(h, name)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = f.Close() })
	l.ip("link", "set", name, "up")
	return name
}

// do runs fn on a thread that is in the laptop's namespace, so sockets fn
// creates belong to the laptop. The thread goes back to the test's
// namespace afterwards, or is discarded by the runtime if it cannot.
func (l *laptop) do(fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get the test's network namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(l.ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", l.ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", l.ns, err)
			return
		}
		fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("return from network namespace %s (thread discarded): %w", l.ns, err)
			return // still locked: the thread ends with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}

// dial opens a TCP connection from inside the laptop.
func (l *laptop) dial(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	var derr error
	if err := l.do(func() {
		var d net.Dialer
		c, derr = d.DialContext(ctx, "tcp", to.String())
	}); err != nil {
		return nil, err
	}
	return c, derr
}

// stream is one open HTTP/1.1 keep-alive connection from the laptop to an
// agent's web page: the TCP stream a scenario wants to survive.
type stream struct {
	c  net.Conn
	br *bufio.Reader
}

func (l *laptop) openStream(ctx context.Context, to netip.AddrPort) (*stream, error) {
	c, err := l.dial(ctx, to)
	if err != nil {
		return nil, fmt.Errorf("connect to %s from the laptop: %w", to, err)
	}
	return &stream{c: c, br: bufio.NewReader(c)}, nil
}

// get asks for the agent's page on the open connection and checks it.
func (s *stream) get(deadline time.Time) error {
	if err := s.c.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := io.WriteString(s.c, "GET / HTTP/1.1\r\nHost: agent\r\n\r\n"); err != nil {
		return fmt.Errorf("send a request on the open connection: %w", err)
	}
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		return fmt.Errorf("read the response on the open connection: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read the page on the open connection: %w", err)
	}
	if !strings.Contains(string(body), "hello from agent") {
		return fmt.Errorf("unexpected page %q", body)
	}
	return nil
}

func (s *stream) Close() error { return s.c.Close() }

// waitAgent starts a new connection to the agent's page from the laptop
// every attemptEvery (each bounded to five seconds, so a SYN the kernel
// retransmits still counts) until one answers or ctx ends; it returns the
// time of the first answer.
func (l *laptop) waitAgent(ctx context.Context, to netip.AddrPort) (time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	answered := make(chan time.Time, 1)
	var mu sync.Mutex
	var last error // the latest attempt's failure
	tick := time.NewTicker(attemptEvery)
	defer tick.Stop()
	for {
		wg.Go(func() {
			attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			s, err := l.openStream(attempt, to)
			if err == nil {
				err = s.get(time.Now().Add(5 * time.Second))
				s.Close()
			}
			if err == nil {
				select {
				case answered <- time.Now():
				default:
				}
				return
			}
			mu.Lock()
			last = err
			mu.Unlock()
		})
		select {
		case at := <-answered:
			return at, nil
		case <-ctx.Done():
			mu.Lock()
			defer mu.Unlock()
			return time.Time{}, fmt.Errorf("agent at %s never answered a new connection: %w (last attempt: %v)", to, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// attemptEvery is how often waitAgent starts a new connection: the
// resolution of the times the scenarios log.
const attemptEvery = 100 * time.Millisecond
