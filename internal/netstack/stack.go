package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// nicID is the only network interface of a Stack: the utun link.
const nicID tcpip.NICID = 1

// outboundQueueLen is how many packets the stack may queue for the utun
// socket before it drops, like a NIC's transmit ring.
const outboundQueueLen = 1024

// Stack is a userspace TCP/IP stack (gVisor) whose only interface is a file
// descriptor carrying one IP packet per datagram behind the 4-byte utun
// header. It stands in for the operating system's network stack behind a
// utun device: a test host or the demo uses one on its end of the socketpair,
// and a test can put a second one on the tunnel's end to play a peer without
// any tunnel.
//
// A Stack starts with no address and no route; Apply (or AddAddress and
// AddRoute) configures it.
type Stack struct {
	stack *stack.Stack
	link  *utunLink
	file  *os.File

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	stats struct{ in, out, malformed, writeErrors, syns atomic.Uint64 }
}

// Stats counts packets crossing a Stack's utun link.
type Stats struct {
	// PacketsIn and PacketsOut count packets read from and written to the fd.
	PacketsIn, PacketsOut uint64
	// Malformed counts datagrams dropped because the utun header was missing,
	// unknown, or disagreed with the packet's IP version.
	Malformed uint64
	// WriteErrors counts packets lost because writing to the fd failed (for
	// example nobody holds the other end any more).
	WriteErrors uint64
	// TCPSyns counts connection openings sent (SYN without ACK), each
	// retransmission of one included: more SYNs than connections means the
	// tunnel lost some, which costs a program on the host a second each.
	TCPSyns uint64
}

// utunLink is a channel endpoint whose MTU can change when new network
// settings arrive, as a utun interface's can.
type utunLink struct {
	*channel.Endpoint
	mtu atomic.Uint32
}

// MTU implements stack.LinkEndpoint.
func (l *utunLink) MTU() uint32 { return l.mtu.Load() }

// New attaches a new stack to fd, which must be a packet socket (or
// utun device) that carries utun-framed packets. The Stack works on its
// own duplicate of fd, made non-blocking; the caller keeps fd. Note that
// O_NONBLOCK is shared with every duplicate of fd. mtu is the initial link
// MTU; settings applied later may change it.
func New(fd int, mtu uint32) (*Stack, error) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, fmt.Errorf("duplicate utun fd %d: %w", fd, err)
	}
	unix.CloseOnExec(dup)
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("make utun fd %d non-blocking: %w", fd, err)
	}
	return newStack(os.NewFile(uintptr(dup), "utun"), mtu)
}

// NewSocketpair makes a packet socketpair standing in for a utun device,
// attaches a new stack to one end and returns the other end, for the tunnel.
// The tunnel's end is blocking, as a real utun fd would be handed over; the
// caller owns it and closes it, and the stack sees EOF once every copy of it
// is closed. mtu is the initial link MTU.
func NewSocketpair(mtu uint32) (s *Stack, tunnel *os.File, err error) {
	host, tunnel, err := utunSocketpair()
	if err != nil {
		return nil, nil, err
	}
	s, err = newStack(host, mtu)
	if err != nil {
		tunnel.Close()
		return nil, nil, err
	}
	return s, tunnel, nil
}

// newStack takes ownership of f, which must be non-blocking so that Close
// can interrupt the reader.
func newStack(f *os.File, mtu uint32) (*Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	link := &utunLink{Endpoint: channel.New(outboundQueueLen, mtu, "")}
	link.mtu.Store(mtu)
	if terr := s.CreateNIC(nicID, link); terr != nil {
		s.Close()
		s.Wait()
		f.Close()
		return nil, fmt.Errorf("create the utun interface of the userspace stack: %s", terr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Stack{stack: s, link: link, file: f, cancel: cancel}
	n.wg.Add(2)
	go n.readLoop()
	go n.writeLoop(ctx)
	return n, nil
}

// readLoop moves datagrams from the fd into the stack until the fd is closed
// or reports EOF (the other end of a SOCK_SEQPACKET pair closed).
func (n *Stack) readLoop() {
	defer n.wg.Done()
	buf := make([]byte, 65536+utunHeaderLen)
	for {
		nr, err := n.file.Read(buf)
		if err != nil {
			// os.ErrClosed (our Close), io.EOF (peer gone) or a real error:
			// either way no more packets will come.
			return
		}
		proto, pkt, err := parseFrame(buf[:nr])
		if err != nil {
			n.stats.malformed.Add(1)
			continue
		}
		n.stats.in.Add(1)
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{
			Payload: buffer.MakeWithData(append([]byte(nil), pkt...)),
		})
		n.link.InjectInbound(proto, pb)
		pb.DecRef()
	}
}

// writeLoop moves packets the stack sends out of the link onto the fd.
func (n *Stack) writeLoop(ctx context.Context) {
	defer n.wg.Done()
	var buf []byte
	for {
		pkt := n.link.ReadContext(ctx)
		if pkt == nil {
			return // cancelled by Close
		}
		var ok bool
		buf, ok = appendFrame(buf[:0], pkt.NetworkProtocolNumber)
		if ok {
			for _, s := range pkt.AsSlices() {
				buf = append(buf, s...)
			}
		}
		pkt.DecRef()
		if !ok {
			continue
		}
		if _, err := n.file.Write(buf); err != nil {
			n.stats.writeErrors.Add(1)
			continue
		}
		n.stats.out.Add(1)
		if isTCPSyn(buf[utunHeaderLen:]) {
			n.stats.syns.Add(1)
		}
	}
}

// isTCPSyn reports whether pkt (IPv4 or IPv6, no extension headers) is a
// TCP segment opening a connection: SYN without ACK.
func isTCPSyn(pkt []byte) bool {
	var proto byte
	var hdr int
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		proto, hdr = pkt[9], int(pkt[0]&0x0f)*4
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		proto, hdr = pkt[6], 40
	default:
		return false
	}
	if proto != 6 || len(pkt) < hdr+14 {
		return false
	}
	flags := pkt[hdr+13]
	return flags&0x02 != 0 && flags&0x10 == 0
}

// Close stops the pumps, closes the fd and tears the stack down, waiting
// for every goroutine it started. Connections made through the stack fail
// afterwards. Close is idempotent.
func (n *Stack) Close() error {
	var err error
	n.closeOnce.Do(func() {
		n.cancel()
		err = n.file.Close()
		n.wg.Wait()
		n.link.Close()
		n.stack.Close()
		n.stack.Wait()
	})
	if err != nil {
		return fmt.Errorf("close the userspace stack's utun fd: %w", err)
	}
	return nil
}

// Stats returns the link's packet counters.
func (n *Stack) Stats() Stats {
	return Stats{
		PacketsIn:   n.stats.in.Load(),
		PacketsOut:  n.stats.out.Load(),
		Malformed:   n.stats.malformed.Load(),
		WriteErrors: n.stats.writeErrors.Load(),
		TCPSyns:     n.stats.syns.Load(),
	}
}

// MTU is the current MTU of the utun link.
func (n *Stack) MTU() uint32 { return n.link.MTU() }

// Apply replaces the whole interface configuration (addresses, routes, MTU)
// with cfg, the way a NetworkExtension replaces its settings on every
// setTunnelNetworkSettings call.
func (n *Stack) Apply(cfg Config) error {
	for _, a := range n.stack.AllAddresses()[nicID] {
		if terr := n.stack.RemoveAddress(nicID, a.AddressWithPrefix.Address); terr != nil {
			return fmt.Errorf("remove address %s: %s", a.AddressWithPrefix, terr)
		}
	}
	n.stack.SetRouteTable(nil)
	for _, p := range cfg.Addrs {
		if err := n.AddAddress(p); err != nil {
			return err
		}
	}
	for _, r := range cfg.Routes {
		n.AddRoute(r)
	}
	n.link.mtu.Store(cfg.MTU)
	return nil
}

// AddAddress assigns p's address to the interface; p's length is the
// on-link prefix, as on a real interface.
func (n *Stack) AddAddress(p netip.Prefix) error {
	pa := tcpip.ProtocolAddress{
		Protocol: protocolOf(p.Addr()),
		AddressWithPrefix: tcpip.AddressWithPrefix{
			Address:   tcpip.AddrFromSlice(p.Addr().Unmap().AsSlice()),
			PrefixLen: p.Bits(),
		},
	}
	if terr := n.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); terr != nil {
		return fmt.Errorf("add address %s to the userspace stack: %s", p, terr)
	}
	return nil
}

// AddRoute sends traffic for p out of the utun interface.
func (n *Stack) AddRoute(p netip.Prefix) {
	p = p.Masked()
	sub, err := tcpip.NewSubnet(tcpip.AddrFromSlice(p.Addr().AsSlice()),
		tcpip.MaskFromBytes(net.CIDRMask(p.Bits(), p.Addr().BitLen())))
	if err != nil {
		panic(fmt.Sprintf("netstack: masked prefix %s rejected as subnet: %v", p, err))
	}
	n.stack.AddRoute(tcpip.Route{Destination: sub, NIC: nicID})
}

// DialTCP opens a TCP connection through the utun link, as a program on the
// host would after the tunnel's routes are installed.
func (n *Stack) DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	c, err := gonet.DialContextTCP(ctx, n.stack, fullAddr(addr), protocolOf(addr.Addr()))
	if err != nil {
		return nil, fmt.Errorf("dial tcp %s through the userspace stack: %w", addr, err)
	}
	return c, nil
}

// ListenTCP listens on addr, which must be an address of the stack (or the
// unspecified address of its family).
func (n *Stack) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	l, err := gonet.ListenTCP(n.stack, fullAddr(addr), protocolOf(addr.Addr()))
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s on the userspace stack: %w", addr, err)
	}
	return l, nil
}

// DialUDP makes a connected UDP socket to addr through the utun link.
func (n *Stack) DialUDP(addr netip.AddrPort) (net.Conn, error) {
	raddr := fullAddr(addr)
	c, err := gonet.DialUDP(n.stack, nil, &raddr, protocolOf(addr.Addr()))
	if err != nil {
		return nil, fmt.Errorf("dial udp %s through the userspace stack: %w", addr, err)
	}
	return c, nil
}

// ListenUDP binds a UDP socket to addr on the stack.
func (n *Stack) ListenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	laddr := fullAddr(addr)
	c, err := gonet.DialUDP(n.stack, &laddr, nil, protocolOf(addr.Addr()))
	if err != nil {
		return nil, fmt.Errorf("listen udp %s on the userspace stack: %w", addr, err)
	}
	return c, nil
}

func protocolOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Unmap().Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	fa := tcpip.FullAddress{Port: ap.Port()}
	if a := ap.Addr().Unmap(); a.IsValid() && !a.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(a.AsSlice())
	}
	return fa
}
