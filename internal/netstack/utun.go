package netstack

import (
	"encoding/binary"
	"errors"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// The utun header is the address family of the packet as a 4-byte big-endian
// number, with the values macOS uses (AF_INET6 is 30 there, unlike Linux's 10).
// The tunnel writes these values on every platform because it is the macOS
// wire format the socketpair stands in for.
const (
	utunHeaderLen = 4
	afInet        = 2
	afInet6       = 30
)

// errFrame is wrapped by every reason parseFrame rejects a datagram, so
// callers can count malformed frames separately from I/O errors.
var errFrame = errors.New("malformed utun frame")

// parseFrame splits one datagram read from the utun socket into the network
// protocol named by its header and the IP packet behind it. The header must
// name AF_INET or AF_INET6 (macOS numbering) and agree with the IP version
// nibble of the packet: a tunnel that mislabels packets would have them
// dropped by the real kernel, so the test host drops them too.
func parseFrame(b []byte) (tcpip.NetworkProtocolNumber, []byte, error) {
	if len(b) <= utunHeaderLen {
		return 0, nil, fmt.Errorf("%w: %d bytes is too short for a 4-byte header and a packet", errFrame, len(b))
	}
	af := binary.BigEndian.Uint32(b[:utunHeaderLen])
	pkt := b[utunHeaderLen:]
	version := pkt[0] >> 4
	switch {
	case af == afInet && version == 4:
		return ipv4.ProtocolNumber, pkt, nil
	case af == afInet6 && version == 6:
		return ipv6.ProtocolNumber, pkt, nil
	case af != afInet && af != afInet6:
		return 0, nil, fmt.Errorf("%w: address family %d is neither AF_INET (2) nor AF_INET6 (30)", errFrame, af)
	default:
		return 0, nil, fmt.Errorf("%w: address family %d carries an IPv%d packet", errFrame, af, version)
	}
}

// appendFrame appends the utun header for proto to dst; the caller appends the
// packet itself. It reports false for protocols utun cannot carry.
func appendFrame(dst []byte, proto tcpip.NetworkProtocolNumber) ([]byte, bool) {
	switch proto {
	case ipv4.ProtocolNumber:
		return binary.BigEndian.AppendUint32(dst, afInet), true
	case ipv6.ProtocolNumber:
		return binary.BigEndian.AppendUint32(dst, afInet6), true
	default:
		return dst, false
	}
}
