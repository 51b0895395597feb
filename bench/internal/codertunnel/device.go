package main

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/tailscale/wireguard-go/tun"
)

// The address families of macOS's utun framing (a 4-byte big-endian header
// before each packet), Darwin's values on every OS: the socketpair stands
// for a NetworkExtension's utun.
const (
	afInet   = 2
	afInet6  = 30
	utunHead = 4
	// deviceMTU is the MTU of a CoderVPN tunnel device (tunfd.TunnelMTU):
	// the manager gets it in the network settings either way.
	deviceMTU = 1280
)

// utunDevice is a tun.Device over a utun-framed fd that behaves as
// wireguard-go's macOS device does (the one Coder's tunnel uses in a
// NetworkExtension): one packet per read, one write per packet, a batch
// size of one, through a poller-backed *os.File.
type utunDevice struct {
	f         *os.File
	events    chan tun.Event
	closeOnce sync.Once
}

func newUtunDevice(f *os.File) *utunDevice {
	d := &utunDevice{f: f, events: make(chan tun.Event, 1)}
	d.events <- tun.EventUp // a NetworkExtension's utun is up when handed over
	return d
}

func (d *utunDevice) File() *os.File           { return d.f }
func (d *utunDevice) MTU() (int, error)        { return deviceMTU, nil }
func (d *utunDevice) Name() (string, error)    { return "utun", nil }
func (d *utunDevice) Events() <-chan tun.Event { return d.events }
func (d *utunDevice) BatchSize() int           { return 1 }

// Read reads one packet into bufs[0] at offset; the header goes in the 4
// bytes before it.
func (d *utunDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < utunHead {
		return 0, io.ErrShortBuffer
	}
	n, err := d.f.Read(bufs[0][offset-utunHead:])
	if n < utunHead {
		return 0, err
	}
	sizes[0] = n - utunHead
	return 1, err
}

// Write writes each packet with its utun header, one system call each.
func (d *utunDevice) Write(bufs [][]byte, offset int) (int, error) {
	if offset < utunHead {
		return 0, io.ErrShortBuffer
	}
	for i, b := range bufs {
		b = b[offset-utunHead:]
		if len(b) <= utunHead {
			return i, fmt.Errorf("empty packet %d", i)
		}
		b[0], b[1], b[2] = 0, 0, 0
		switch b[utunHead] >> 4 {
		case 4:
			b[3] = afInet
		case 6:
			b[3] = afInet6
		default:
			return i, fmt.Errorf("packet %d is neither IPv4 nor IPv6", i)
		}
		if _, err := d.f.Write(b); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

func (d *utunDevice) Close() error {
	var err error
	d.closeOnce.Do(func() {
		err = d.f.Close()
		close(d.events)
	})
	return err
}
