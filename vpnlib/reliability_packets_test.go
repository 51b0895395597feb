package vpnlib_test

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/tailscale/wireguard-go/tun"

	"github.com/codervpn/codervpn/tunfd"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// utunFrame is a utun datagram: a 4-byte address family, then payload.
func utunFrame(family uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, family)
	return append(b, payload...)
}

// TestMalformedPacketFlood writes tens of thousands of malformed datagrams
// into the utun, from the host's side, while a TCP stream to an agent is
// busy. Each malformed kind is dropped and counted by the tunnel device (its
// counters match what was sent exactly), well-framed garbage is dropped by
// the engine; the stream loses nothing and new connections keep working
// during and after the flood.
func TestMalformedPacketFlood(t *testing.T) {
	const perKind = 5000
	ipv4 := append([]byte{0x45, 0, 0, 20}, make([]byte, 16)...)
	ipv6 := append([]byte{0x60, 0, 0, 0, 0, 0, 59, 64}, make([]byte, 32)...)
	kinds := []struct {
		name  string
		frame []byte
		count func(tunfd.Stats) uint64
	}{
		{"short frame", []byte{0, 0, 0}, func(s tunfd.Stats) uint64 { return s.ShortFrames }},
		{"unknown family", utunFrame(7, ipv4), func(s tunfd.Stats) uint64 { return s.UnknownFamily }},
		{"bad IP version", utunFrame(2, append([]byte{0x50}, ipv4[1:]...)), func(s tunfd.Stats) uint64 { return s.BadIPVersion }},
		{"family mismatch", utunFrame(2, ipv6), func(s tunfd.Stats) uint64 { return s.FamilyMismatch }},
		{"oversize", utunFrame(30, append(append([]byte(nil), ipv6...), make([]byte, 70000)...)), func(s tunfd.Stats) uint64 { return s.Oversize }},
		// Well framed, but not an IPv6 packet anyone could route: the
		// device delivers it and the engine drops it (no count to check).
		{"garbage IPv6", utunFrame(30, append([]byte{0x6f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, make([]byte, 40)...)), nil},
	}

	var (
		mu  sync.Mutex
		dev *tunfd.Device
	)
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}, config: func(c *vpnlib.TunnelConfig) {
		c.OpenTun = func(fd int) (tun.Device, error) {
			d, err := tunfd.Open(fd, tunfd.Options{MTU: tunfd.TunnelMTU})
			mu.Lock()
			dev = d
			mu.Unlock()
			return d, err
		}
	}})
	_, a := r.startWithAgent(r.d.URL.String())
	mu.Lock()
	d := dev
	mu.Unlock()
	before := d.Stats()
	s := openStream(r.ctx, t, r.h, a)
	if err := s.send(r.ctx, streamChunk); err != nil {
		t.Fatal(err)
	}

	flooded := make(chan error, 1)
	started := time.Now()
	go func() {
		for i := 0; i < perKind; i++ {
			for _, k := range kinds {
				if err := r.h.Netstack().WriteRaw(k.frame); err != nil {
					flooded <- err
					return
				}
			}
		}
		flooded <- nil
	}()
	// Traffic during the flood.
	for range 3 {
		if err := probeHTTP(r.ctx, r.h, a); err != nil {
			t.Errorf("during the flood: %v", err)
		}
		if err := s.send(r.ctx, streamChunk); err != nil {
			t.Fatalf("stream during the flood: %v", err)
		}
	}
	if err := <-flooded; err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d malformed datagrams in %v", perKind*len(kinds), time.Since(started).Round(time.Millisecond))

	// The device reads them all; then every counter must match.
	deadline := time.Now().Add(20 * time.Second)
	waitFor(r.ctx, t, "the tunnel device to read the flood", func() bool {
		st := d.Stats()
		if time.Now().After(deadline) {
			t.Fatalf("the tunnel device counted %v", st)
		}
		for _, k := range kinds {
			if k.count != nil && k.count(st)-k.count(before) < perKind {
				return false
			}
		}
		return true
	})
	st := d.Stats()
	for _, k := range kinds {
		if k.count == nil {
			continue
		}
		if got := k.count(st) - k.count(before); got != perKind {
			t.Errorf("%s: counted %d, sent %d", k.name, got, perKind)
		}
	}
	t.Logf("tunnel device counters after the flood: %v", st)

	if err := probeHTTP(r.ctx, r.h, a); err != nil {
		t.Fatalf("after the flood: %v", err)
	}
	if err := s.finish(r.ctx); err != nil {
		t.Fatalf("stream across the flood: %v", err)
	}
	r.stop()
}
