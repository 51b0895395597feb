package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

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

	"github.com/codervpn/codervpn/internal/linuxhost"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
)

// The userspace device stands in for a TUN where we may not make one (not
// root): the tunnel gets one end of a packet socketpair, and a gVisor TCP/IP
// stack in this process sits on the other end and plays the kernel. On a
// socketpair the tunnel frames packets as on a macOS utun (tunfd.Open), so
// the stack does too: a 4-byte big-endian address family, Darwin's numbers.
const (
	utunHeader  = 4
	utunAFInet  = 2
	utunAFInet6 = 30
	stackNIC    = tcpip.NICID(1)
	// sockBuf sizes the socketpair's buffers for a TCP window of packets.
	sockBuf = 4 << 20
)

// userspaceDevice is a device backed by a socketpair and a netstack.
type userspaceDevice struct {
	tunEnd *os.File // given to the tunnel
	hostFD *os.File // read and written by the stack
	stack  *stack.Stack
	ep     *channel.Endpoint

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	dns  []netip.Addr
	once sync.Once
}

func newUserspaceDevice() (*userspaceDevice, error) {
	// SOCK_SEQPACKET keeps packet boundaries without the small queue limit
	// of unix datagram sockets, and reports EOF when the other end closes.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create the socketpair standing in for a TUN: %w", err)
	}
	for _, fd := range fds {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sockBuf)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, sockBuf)
	}
	// Non-blocking, so our reads park in the poller and Close wakes them.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("make the socketpair non-blocking: %w", err)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	ep := channel.New(1024, vpnlib.TunnelMTU, "")
	if terr := s.CreateNIC(stackNIC, ep); terr != nil {
		s.Close()
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("create the userspace stack's interface: %s", terr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &userspaceDevice{
		hostFD: os.NewFile(uintptr(fds[0]), "userspace-host"),
		tunEnd: os.NewFile(uintptr(fds[1]), "userspace-tun"),
		stack:  s, ep: ep, cancel: cancel,
	}
	d.wg.Go(d.inbound)
	d.wg.Go(func() { d.outbound(ctx) })
	return d, nil
}

// inbound moves packets the tunnel wrote into the stack.
func (d *userspaceDevice) inbound() {
	buf := make([]byte, 65536+utunHeader)
	for {
		n, err := d.hostFD.Read(buf)
		if err != nil {
			return // closed, or the tunnel's end is gone
		}
		if n <= utunHeader {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch binary.BigEndian.Uint32(buf) {
		case utunAFInet:
			proto = ipv4.ProtocolNumber
		case utunAFInet6:
			proto = ipv6.ProtocolNumber
		default:
			continue
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			Payload: buffer.MakeWithData(append([]byte(nil), buf[utunHeader:n]...)),
		})
		d.ep.InjectInbound(proto, pkt)
		pkt.DecRef()
	}
}

// outbound moves packets the stack sends to the tunnel.
func (d *userspaceDevice) outbound(ctx context.Context) {
	var buf []byte
	for {
		pkt := d.ep.ReadContext(ctx)
		if pkt == nil {
			return
		}
		af := uint32(utunAFInet6)
		if pkt.NetworkProtocolNumber == ipv4.ProtocolNumber {
			af = utunAFInet
		}
		buf = binary.BigEndian.AppendUint32(buf[:0], af)
		for _, s := range pkt.AsSlices() {
			buf = append(buf, s...)
		}
		pkt.DecRef()
		// A full socket buffer drops the packet, as a NIC would; TCP resends.
		_, _ = d.hostFD.Write(buf)
	}
}

// File implements device.
func (d *userspaceDevice) File() *os.File { return d.tunEnd }

// Describe implements device.
func (d *userspaceDevice) Describe() string {
	return "a socketpair with a userspace TCP/IP stack (no TUN)"
}

// Apply implements device: the interface part replaces the stack's
// addresses and routes; the DNS part is remembered for lookups.
func (d *userspaceDevice) Apply(_ context.Context, req *vpnpb.NetworkSettingsRequest) error {
	s, err := linuxhost.ParseSettings(req)
	if err != nil {
		return fmt.Errorf("invalid network settings: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.HasInterface {
		if s.MTU != 0 && s.MTU != vpnlib.TunnelMTU {
			return fmt.Errorf("MTU %d: the userspace stack runs at %d only", s.MTU, vpnlib.TunnelMTU)
		}
		for _, a := range d.stack.AllAddresses()[stackNIC] {
			_ = d.stack.RemoveAddress(stackNIC, a.AddressWithPrefix.Address)
		}
		var routes []tcpip.Route
		for _, p := range s.Addrs {
			pa := tcpip.ProtocolAddress{
				Protocol:          protoOf(p.Addr()),
				AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(p.Addr().AsSlice()), PrefixLen: p.Bits()},
			}
			if terr := d.stack.AddProtocolAddress(stackNIC, pa, stack.AddressProperties{}); terr != nil {
				return fmt.Errorf("add address %s: %s", p, terr)
			}
		}
		for _, p := range s.Routes {
			sub, err := tcpip.NewSubnet(tcpip.AddrFromSlice(p.Addr().AsSlice()),
				tcpip.MaskFromBytes(net.CIDRMask(p.Bits(), p.Addr().BitLen())))
			if err != nil {
				return fmt.Errorf("route %s: %w", p, err)
			}
			routes = append(routes, tcpip.Route{Destination: sub, NIC: stackNIC})
		}
		d.stack.SetRouteTable(routes)
	}
	if s.HasDNS {
		d.dns = s.DNS.Servers
	}
	return nil
}

// dnsServers are the tunnel's resolvers, once it has said which.
func (d *userspaceDevice) dnsServers() []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]netip.Addr(nil), d.dns...)
}

// DialContext connects through the stack, for http.Transport. Names are
// resolved with the tunnel's DNS server, through the stack as well.
func (d *userspaceDevice) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	ips, err := d.resolver().LookupNetIP(ctx, "ip6", host)
	if err != nil {
		return nil, err
	}
	pn, err := net.LookupPort(network, port)
	if err != nil {
		return nil, err
	}
	ap := netip.AddrPortFrom(ips[0], uint16(pn)) //nolint:gosec // a port
	return gonet.DialContextTCP(ctx, d.stack, fullAddress(ap), protoOf(ap.Addr()))
}

// resolver asks the tunnel's DNS server over UDP through the stack.
func (d *userspaceDevice) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		servers := d.dnsServers()
		if len(servers) == 0 {
			return nil, errors.New("the tunnel has not sent a DNS server yet")
		}
		raddr := fullAddress(netip.AddrPortFrom(servers[0], 53))
		return gonet.DialUDP(d.stack, nil, &raddr, protoOf(servers[0]))
	}}
}

// Close implements device.
func (d *userspaceDevice) Close() error {
	d.once.Do(func() {
		d.cancel()
		_ = d.hostFD.Close()
		d.wg.Wait()
		d.ep.Close()
		d.stack.Close()
		d.stack.Wait()
		_ = d.tunEnd.Close()
	})
	return nil
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddress(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
}
