package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// wireguardGoThroughput is baseline (b): two upstream wireguard-go devices
// with in-memory TUNs, peered over loopback UDP, carrying size bytes of
// 1280-byte packets from one to the other. No TCP and no IP stack: what is
// left is WireGuard's own crypto, queues and UDP I/O, the practical ceiling
// of any WireGuard written in Go on this CPU.
func wireguardGoThroughput(ctx context.Context, size int64) (float64, error) {
	const pktLen = 1280
	a, b := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	devA := device.NewDevice(a.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer devA.Close()
	devB := device.NewDevice(b.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer devB.Close()
	privA, pubA, err := wgKey()
	if err != nil {
		return 0, err
	}
	privB, pubB, err := wgKey()
	if err != nil {
		return 0, err
	}
	if err := devB.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nallowed_ip=10.9.0.1/32\n", privB, pubA)); err != nil {
		return 0, fmt.Errorf("configure device B: %w", err)
	}
	if err := devB.Up(); err != nil {
		return 0, err
	}
	port, err := listenPort(devB)
	if err != nil {
		return 0, err
	}
	if err := devA.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nendpoint=127.0.0.1:%d\nallowed_ip=10.9.0.2/32\n",
		privA, pubB, port)); err != nil {
		return 0, fmt.Errorf("configure device A: %w", err)
	}
	if err := devA.Up(); err != nil {
		return 0, err
	}

	pkt := ipv4Packet(pktLen, [4]byte{10, 9, 0, 1}, [4]byte{10, 9, 0, 2})
	total := size / pktLen
	// The first packet waits for the handshake; measure from its arrival.
	a.Outbound <- pkt
	select {
	case <-b.Inbound:
	case <-ctx.Done():
		return 0, fmt.Errorf("no packet through wireguard-go: %w", ctx.Err())
	}
	// Credits keep the sender from overrunning the receiver's queues, as
	// TCP's window would; the receiver returns one per packet delivered.
	const window = 512
	credits := make(chan struct{}, window)
	var received atomic.Int64
	lastArrival := make(chan time.Time, 1)
	go func() {
		var last time.Time
		defer func() { lastArrival <- last }()
		for received.Load() < total {
			select {
			case <-b.Inbound:
				received.Add(1)
				last = time.Now()
				<-credits
			case <-time.After(time.Second): // the rest were dropped
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	var last time.Time
send:
	for sent := int64(0); sent < total; sent++ {
		select {
		case credits <- struct{}{}:
		case last = <-lastArrival: // the receiver gave up on drops
			break send
		}
		select {
		case a.Outbound <- pkt:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if last.IsZero() {
		last = <-lastArrival
	}
	got := received.Load()
	if got < total*9/10 {
		return 0, fmt.Errorf("wireguard-go delivered only %d of %d packets", got, total)
	}
	return float64(got*pktLen) / last.Sub(start).Seconds(), nil
}

// wgKey makes a WireGuard key pair, hex-encoded as the UAPI wants them.
func wgKey() (priv, pub string, err error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return "", "", err
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		return "", "", err
	}
	return hex.EncodeToString(k[:]), hex.EncodeToString(p), nil
}

func listenPort(d *device.Device) (int, error) {
	cfg, err := d.IpcGet()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(cfg, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no listen_port in %q", cfg)
}

// ipv4Packet is a UDP-over-IPv4 packet of n bytes from src to dst.
func ipv4Packet(n int, src, dst [4]byte) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	p[8] = 64 // TTL
	p[9] = 17 // UDP
	copy(p[12:], src[:])
	copy(p[16:], dst[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	return p
}
