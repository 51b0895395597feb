package tunfd

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/tailscale/wireguard-go/tun"
	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/internal/fdtest"
)

// engineOffset is the headroom the engine (tstun.Wrapper) reserves in front of
// every packet: wireguard's transport header size.
const engineOffset = 16

func TestRoundTrip(t *testing.T) {
	type family struct {
		name string
		make func(n int, seed byte) []byte
	}
	families := []family{{"ipv4", ipv4Packet}, {"ipv6", ipv6Packet}}
	sockTypes := []struct {
		name string
		typ  int
	}{{"dgram", unix.SOCK_DGRAM}, {"seqpacket", unix.SOCK_SEQPACKET}}
	framings := []Framing{FramingUTun, FramingNone}
	// offset 16 is the engine's (header goes into headroom); 0 and 2 force
	// the copying path for utun framing.
	offsets := []int{engineOffset, 4, 2, 0}
	batches := []int{1, 2, 3, 8}

	for _, fr := range framings {
		for _, st := range sockTypes {
			for _, fam := range families {
				for _, off := range offsets {
					for _, batch := range batches {
						name := fmt.Sprintf("%v/%s/%s/offset%d/batch%d", fr, st.name, fam.name, off, batch)
						t.Run(name, func(t *testing.T) {
							devFd, peer := socketpair(t, st.typ)
							d := newDevice(t, devFd, Options{Framing: fr, BatchSize: batch})
							pkts := make([][]byte, batch)
							for i := range pkts {
								pkts[i] = fam.make(60+i*170, byte(i))
							}

							// Host → engine: frames queued on the peer come out of Read.
							for _, p := range pkts {
								mustWrite(t, peer, frameFor(fr, p))
							}
							bufs, sizes := makeBufs(batch, off+1500)
							n, err := d.Read(bufs, sizes, off)
							if err != nil {
								t.Fatalf("Read: %v", err)
							}
							if n != batch {
								t.Fatalf("Read returned %d packets, want %d (all were queued)", n, batch)
							}
							for i, p := range pkts {
								checkPacket(t, fmt.Sprintf("read packet %d", i), bufs[i][off:off+sizes[i]], p)
							}

							// Engine → host: Write emits one frame per packet.
							wbufs := make([][]byte, batch)
							for i, p := range pkts {
								wbufs[i] = append(make([]byte, off), p...)
							}
							if n, err := d.Write(wbufs, off); err != nil || n != batch {
								t.Fatalf("Write = %d, %v; want %d, nil", n, err, batch)
							}
							for i, p := range pkts {
								checkPacket(t, fmt.Sprintf("written frame %d", i), mustRecv(t, peer), frameFor(fr, p))
							}
							if pending(t, peer) {
								t.Fatal("Write emitted more frames than packets")
							}

							s := d.Stats()
							if s.Dropped() != 0 || s.PacketsIn != uint64(batch) || s.PacketsOut != uint64(batch) {
								t.Fatalf("stats after clean round trip: %v", s)
							}
						})
					}
				}
			}
		}
	}
}

// A batch read returns what is queued now rather than waiting to fill bufs.
func TestReadReturnsPartialBatch(t *testing.T) {
	devFd, peer := socketpair(t, unix.SOCK_DGRAM)
	d := newDevice(t, devFd, Options{BatchSize: 8})
	p := ipv4Packet(100, 1)
	mustWrite(t, peer, frameFor(FramingUTun, p))
	mustWrite(t, peer, frameFor(FramingUTun, p))
	bufs, sizes := makeBufs(8, engineOffset+1500)
	n, err := d.Read(bufs, sizes, engineOffset)
	if err != nil || n != 2 {
		t.Fatalf("Read = %d, %v; want 2 packets", n, err)
	}
}

func TestMetadata(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		wantMTU   int
		wantBatch int
		wantName  string // "" = don't check (platform-derived)
	}{
		{name: "defaults", opts: Options{}, wantMTU: 1280, wantBatch: 1},
		{name: "custom", opts: Options{MTU: 1420, Name: "tun-test", BatchSize: 16}, wantMTU: 1420, wantBatch: 16, wantName: "tun-test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			devFd, _ := socketpair(t, unix.SOCK_DGRAM)
			d := newDevice(t, devFd, tt.opts)
			select {
			case ev := <-d.Events():
				if ev != tun.EventUp {
					t.Fatalf("first event = %v, want EventUp", ev)
				}
			default:
				t.Fatal("no EventUp queued after New")
			}
			if mtu, err := d.MTU(); err != nil || mtu != tt.wantMTU {
				t.Fatalf("MTU() = %d, %v; want %d", mtu, err, tt.wantMTU)
			}
			if d.BatchSize() != tt.wantBatch {
				t.Fatalf("BatchSize() = %d, want %d", d.BatchSize(), tt.wantBatch)
			}
			name, err := d.Name()
			if err != nil || name == "" || (tt.wantName != "" && name != tt.wantName) {
				t.Fatalf("Name() = %q, %v; want %q", name, err, tt.wantName)
			}
			if d.File() == nil || int(d.File().Fd()) == devFd {
				t.Fatal("File() must be the device's own dup, not the caller's fd")
			}
		})
	}
}

func TestOpenSocketpairIsUTun(t *testing.T) {
	devFd, peer := socketpair(t, unix.SOCK_DGRAM)
	d, err := Open(devFd, Options{Framing: FramingNone}) // Framing is ignored by Open
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer d.Close()
	if d.Framing() != FramingUTun {
		t.Fatalf("Open on a socketpair chose %v, want utun", d.Framing())
	}
	p := ipv6Packet(80, 3)
	mustWrite(t, peer, utunFrame(30, p))
	bufs, sizes := makeBufs(1, engineOffset+1500)
	if n, err := d.Read(bufs, sizes, engineOffset); err != nil || n != 1 {
		t.Fatalf("Read = %d, %v", n, err)
	}
	checkPacket(t, "packet", bufs[0][engineOffset:engineOffset+sizes[0]], p)
}

func TestNewRejects(t *testing.T) {
	closedFd := func(t *testing.T) int {
		a, _ := socketpair(t, unix.SOCK_DGRAM)
		b, err := unix.Dup(a)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(b)
		return b
	}
	tests := []struct {
		name string
		fd   func(t *testing.T) int
		opts Options
	}{
		{"negative fd", func(*testing.T) int { return -1 }, Options{}},
		{"closed fd", closedFd, Options{}},
		{"pipe", func(t *testing.T) int {
			var p [2]int
			if err := unix.Pipe(p[:]); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
			return p[0]
		}, Options{}},
		{"stream socket", func(t *testing.T) int { a, _ := socketpair(t, unix.SOCK_STREAM); return a }, Options{}},
		{"mtu too small", func(t *testing.T) int { a, _ := socketpair(t, unix.SOCK_DGRAM); return a }, Options{MTU: 100}},
		{"mtu too large", func(t *testing.T) int { a, _ := socketpair(t, unix.SOCK_DGRAM); return a }, Options{MTU: 70000}},
		{"batch too large", func(t *testing.T) int { a, _ := socketpair(t, unix.SOCK_DGRAM); return a }, Options{BatchSize: 1000}},
		{"unknown framing", func(t *testing.T) int { a, _ := socketpair(t, unix.SOCK_DGRAM); return a }, Options{Framing: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := tt.fd(t)
			before, dups := fdtest.Take(t), fdtest.Target(t, fd)
			d, err := New(fd, tt.opts)
			if err == nil {
				d.Close()
				t.Fatalf("New accepted %s", tt.name)
			}
			t.Logf("error: %v", err)
			before.Check(t, dups, "a failed New")
		})
	}
}

// The utun header is Darwin's big-endian protocol family on every OS.
func TestUTunHeaderBytes(t *testing.T) {
	devFd, peer := socketpair(t, unix.SOCK_DGRAM)
	d := newDevice(t, devFd, Options{})
	for _, tc := range []struct {
		pkt  []byte
		want uint32
	}{{ipv4Packet(20, 0), 2}, {ipv6Packet(40, 0), 30}} {
		buf := append(make([]byte, engineOffset), tc.pkt...)
		if _, err := d.Write([][]byte{buf}, engineOffset); err != nil {
			t.Fatal(err)
		}
		got := mustRecv(t, peer)
		if h := binary.BigEndian.Uint32(got); h != tc.want || got[0]|got[1]|got[2] != 0 {
			t.Fatalf("header %x, want family %d", got[:4], tc.want)
		}
	}
}
