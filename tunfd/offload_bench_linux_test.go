package tunfd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tailscale/wireguard-go/tun"
	"golang.org/x/sys/unix"
)

// What the kernel's TUN offloads would buy (issue 18). Two namespaces, each
// with a TUN (MTU 1280, as the tunnel's), joined by a forwarder that reads
// one device and writes what it read to the other, as the engine would after
// encryption. A TCP stream from the first namespace to the second crosses
// both devices. Variants:
//
//   - tunfd: our device on plain IFF_TUN|IFF_NO_PI fds, batch 8 (what
//     vpnlib opens today).
//   - wggo-plain: the engine's tun.CreateTUNFromFile on the same kind of
//     fd: one packet per read and write.
//   - wggo-vnet: tun.CreateTUNFromFile on fds opened with IFF_VNET_HDR: it
//     turns on TSO (the kernel hands over 64 KiB TCP segments, which Read
//     splits) and coalesces what it writes (GRO, batch 128).
//
// The forwarder stands in for the engine without its crypto and UDP, so the
// ratios are the device's share of the packet path, an upper bound of what
// the whole tunnel gains. Figures, not assertions: run it as root with
//
//	go test -run '^$' -bench KernelTUNOffload -benchtime 256x ./tunfd

const offloadChunk = 1 << 20 // bytes per benchmark op

type offloadVariant struct {
	name  string
	flags uint16
	open  func(tb testing.TB, ns string, fd int) tun.Device
}

var offloadVariants = []offloadVariant{
	{"tunfd", unix.IFF_TUN | unix.IFF_NO_PI, func(tb testing.TB, _ string, fd int) tun.Device {
		d, err := Open(fd, Options{MTU: TunnelMTU, BatchSize: 8})
		if err != nil {
			tb.Fatal(err)
		}
		return d
	}},
	{"wggo-plain", unix.IFF_TUN | unix.IFF_NO_PI, openEngineTUN},
	{"wggo-vnet", unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR, openEngineTUN},
}

// openEngineTUN gives a dup of fd to the engine's own Linux device. It looks
// the interface up by name and listens to netlink in the calling thread's
// namespace, so it must run inside ns.
func openEngineTUN(tb testing.TB, ns string, fd int) tun.Device {
	var dev tun.Device
	err := inNetns(ns, func() error {
		dup, err := unix.Dup(fd)
		if err != nil {
			return err
		}
		unix.CloseOnExec(dup)
		if err := unix.SetNonblock(dup, true); err != nil {
			unix.Close(dup)
			return err
		}
		dev, err = tun.CreateTUNFromFile(os.NewFile(uintptr(dup), "/dev/net/tun"), TunnelMTU)
		return err
	})
	if err != nil {
		tb.Fatalf("tun.CreateTUNFromFile: %v", err)
	}
	return dev
}

// inNetns runs fn on a thread inside named namespace ns. The thread is
// thrown away afterwards, never returned to the scheduler in ns.
func inNetns(ns string, fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
		nsfd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- err
			return
		}
		err = unix.Setns(nsfd, unix.CLONE_NEWNET)
		unix.Close(nsfd)
		if err != nil {
			ch <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ch <- fn()
	}()
	return <-ch
}

var offloadSeq atomic.Int32

// offloadNamespace makes namespace cvh-off-… with TUN "cvh-t" at addr/24
// and a route to peer/24 through it, and returns the namespace and the fd.
func offloadNamespace(tb testing.TB, flags uint16, addr, peer string) (string, int) {
	ns := fmt.Sprintf("cvh-off-%d-%d", os.Getpid(), offloadSeq.Add(1))
	ipCmd(tb, "netns", "add", ns)
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	fd := openTUN(tb, ns, "cvh-t", flags)
	ipCmd(tb, "-n", ns, "link", "set", "cvh-t", "mtu", fmt.Sprint(TunnelMTU), "addrgenmode", "none")
	ipCmd(tb, "-n", ns, "addr", "add", addr+"/24", "dev", "cvh-t")
	ipCmd(tb, "-n", ns, "link", "set", "cvh-t", "up")
	ipCmd(tb, "-n", ns, "route", "add", peer+"/24", "dev", "cvh-t")
	return ns, fd
}

// forwarder moves packets from one device to another and counts its calls.
type forwarder struct {
	reads, writes, packets atomic.Int64
}

func (f *forwarder) run(from, to tun.Device) error {
	const offset = 16 // the engine's headroom; ≥ the virtio-net header
	n := max(from.BatchSize(), 1)
	bufs, sizes := makeBufs(n, offset+65535)
	out := make([][]byte, n)
	for {
		k, err := from.Read(bufs, sizes, offset)
		if err != nil {
			return err
		}
		f.reads.Add(1)
		if k == 0 {
			continue
		}
		for i := range k {
			out[i] = bufs[i][:offset+sizes[i]]
		}
		f.packets.Add(int64(k))
		f.writes.Add(1)
		if _, err := to.Write(out[:k], offset); err != nil && errors.Is(err, os.ErrClosed) {
			return err
		}
	}
}

func BenchmarkKernelTUNOffload(b *testing.B) {
	requireTUN(b)
	for _, v := range offloadVariants {
		b.Run(v.name, func(b *testing.B) { benchOffload(b, v) })
	}
}

func benchOffload(b *testing.B, v offloadVariant) {
	nsA, fdA := offloadNamespace(b, v.flags, "10.77.1.1", "10.77.2.0")
	nsB, fdB := offloadNamespace(b, v.flags, "10.77.2.1", "10.77.1.0")
	devA, devB := v.open(b, nsA, fdA), v.open(b, nsB, fdB)
	var ab, ba forwarder
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = ab.run(devA, devB) }()
	go func() { defer wg.Done(); _ = ba.run(devB, devA) }()
	b.Cleanup(func() {
		devA.Close()
		devB.Close()
		wg.Wait()
	})

	var ln net.Listener
	if err := inNetns(nsB, func() (err error) { ln, err = net.Listen("tcp4", "10.77.2.1:0"); return err }); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var client net.Conn
	if err := inNetns(nsA, func() (err error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		client, err = d.Dial("tcp4", ln.Addr().String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()

	chunk := make([]byte, offloadChunk)
	sent := make(chan error, 1)
	var ru0, ru1 unix.Rusage
	b.SetBytes(offloadChunk)
	b.ResetTimer()
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	r0, w0, p0 := ab.reads.Load()+ba.reads.Load(), ab.writes.Load()+ba.writes.Load(), ab.packets.Load()+ba.packets.Load()
	go func() {
		for range b.N {
			if _, err := client.Write(chunk); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	if _, err := io.CopyN(io.Discard, server, int64(b.N)*offloadChunk); err != nil {
		b.Fatalf("receive: %v", err)
	}
	if err := <-sent; err != nil {
		b.Fatalf("send: %v", err)
	}
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	b.StopTimer()
	mb := float64(b.N) * offloadChunk / 1e6
	cpu := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(ab.reads.Load()+ba.reads.Load()-r0)/mb, "devreads/MB")
	b.ReportMetric(float64(ab.writes.Load()+ba.writes.Load()-w0)/mb, "devwrites/MB")
	b.ReportMetric(float64(ab.packets.Load()+ba.packets.Load()-p0)/mb, "pkts/MB")
	b.ReportMetric(cpu.Seconds()/mb*1e3, "cpu-s/GB")
	b.ReportMetric(float64(ru1.Nvcsw-ru0.Nvcsw+ru1.Nivcsw-ru0.Nivcsw)/mb, "ctxsw/MB")
}
