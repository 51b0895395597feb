package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/fdtest"
	"github.com/codervpn/codervpn/internal/netstack/netstacktest"
)

var (
	hostAddr  = netip.MustParseAddr("fd60:627a:a42b:1::1")
	agentAddr = netip.MustParseAddr("fd60:627a:a42b:2::2")
	dnsAddr   = netip.MustParseAddr("fd60:627a:a42b::53")
	prefix48  = netip.MustParsePrefix("fd60:627a:a42b::/48")
)

// stackPair joins a host-side Stack and a "tunnel"-side Stack with a utun
// socketpair. The tunnel side answers for the agent and DNS addresses and
// routes everything back to the host.
func stackPair(t *testing.T, mtu uint32) (host, tunnel *Stack) {
	t.Helper()
	host, tf, err := NewSocketpair(mtu)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	tunnel, err = New(int(tf.Fd()), mtu)
	tf.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tunnel.Close() })

	if err := host.Apply(Config{
		Addrs:  []netip.Prefix{netip.PrefixFrom(hostAddr, 128), netip.MustParsePrefix("100.64.0.1/32")},
		Routes: []netip.Prefix{prefix48, netip.MustParsePrefix("100.100.0.0/16")},
		MTU:    mtu,
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{agentAddr.String() + "/128", dnsAddr.String() + "/128", "100.100.0.2/32"} {
		if err := tunnel.AddAddress(netip.MustParsePrefix(p)); err != nil {
			t.Fatal(err)
		}
	}
	tunnel.AddRoute(netip.MustParsePrefix("::/0"))
	tunnel.AddRoute(netip.MustParsePrefix("0.0.0.0/0"))
	return host, tunnel
}

func TestStackTCPThroughUTun(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen netip.Addr
		size   int
	}{
		{name: "IPv6/small", listen: agentAddr, size: 100},
		{name: "IPv6/larger than many MTUs", listen: agentAddr, size: 1 << 20},
		{name: "IPv4", listen: netip.MustParseAddr("100.100.0.2"), size: 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, tunnel := stackPair(t, 1280)
			l, err := tunnel.ListenTCP(netip.AddrPortFrom(tc.listen, 8080))
			if err != nil {
				t.Fatal(err)
			}
			netstacktest.ServeEcho(t, l)

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := host.DialTCP(ctx, netip.AddrPortFrom(tc.listen, 8080))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			want := make([]byte, tc.size)
			rand.Read(want)
			go func() { c.Write(want) }()
			got := make([]byte, len(want))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("read echo: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("echoed bytes differ from the ones sent")
			}
			if s := host.Stats(); s.PacketsIn == 0 || s.PacketsOut == 0 || s.Malformed != 0 {
				t.Errorf("host stats %+v: want packets both ways and none malformed", s)
			}
		})
	}
}

func TestStackRespectsMTU(t *testing.T) {
	// The tunnel side reads raw frames: with MTU 1280 no frame may carry more
	// than 1280 bytes of IP packet.
	host, tf, err := NewSocketpair(1280)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	defer host.Close()
	if err := host.Apply(Config{Addrs: []netip.Prefix{netip.PrefixFrom(hostAddr, 128)}, Routes: []netip.Prefix{prefix48}, MTU: 1280}); err != nil {
		t.Fatal(err)
	}
	c, err := host.DialUDP(netip.AddrPortFrom(agentAddr, 9))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, 4000)); err != nil {
		t.Fatal(err)
	}
	// 4000 bytes of UDP over IPv6 need fragments, each at most 1280 bytes.
	total := 0
	buf := make([]byte, 65536)
	tf.SetReadDeadline(time.Now().Add(10 * time.Second))
	for total < 4000 {
		n, err := tf.Read(buf)
		if err != nil {
			t.Fatalf("read frame after %d payload bytes: %v", total, err)
		}
		if binary.BigEndian.Uint32(buf[:4]) != afInet6 {
			t.Fatalf("frame header %x, want AF_INET6 (30)", buf[:4])
		}
		if n-4 > 1280 {
			t.Fatalf("frame carries a %d-byte packet over a 1280 MTU", n-4)
		}
		total += n - 4 - 40 - 8 // IPv6 header and fragment header
	}
}

func TestStackDropsMalformedFrames(t *testing.T) {
	host, tunnel := stackPair(t, 1280)
	frames := [][]byte{
		{0, 0, 0},                          // short
		{0, 0, 0, 30},                      // header only
		{0, 0, 0, 10, 0x60, 0, 0, 0},       // Linux AF_INET6 number
		{0, 0, 0, 2, 0x60, 0, 0, 0},        // AF_INET label on IPv6
		{0, 0, 0, 30, 0x45, 0, 0, 0},       // AF_INET6 label on IPv4
		{0xff, 0xff, 0xff, 30, 0x60, 0, 0}, // high bytes set
	}
	for _, f := range frames {
		if err := tunnel.WriteRaw(f); err != nil {
			t.Fatal(err)
		}
	}
	// The host reads datagrams in order, so once it has refused this SYN
	// it has counted every frame written before it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tunnel.DialTCP(ctx, netip.AddrPortFrom(hostAddr, 9))
	if err == nil {
		c.Close()
	}
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("refused")) {
		t.Fatalf("dial to a port nobody listens on: err = %v, want connection refused", err)
	}
	if s := host.Stats(); s.Malformed != uint64(len(frames)) {
		t.Errorf("Malformed = %d, want %d", s.Malformed, len(frames))
	}
}

func TestStackLookupAAAA(t *testing.T) {
	host, tunnel := stackPair(t, 1280)
	pc, err := tunnel.ListenUDP(netip.AddrPortFrom(dnsAddr, 53))
	if err != nil {
		t.Fatal(err)
	}
	netstacktest.ServeAAAA(t, pc, map[string]netip.Addr{"main.ws.me.coder.": agentAddr})

	for _, tc := range []struct {
		name, query string
		want        []netip.Addr
		wantErr     string
	}{
		{name: "known", query: "main.ws.me.coder", want: []netip.Addr{agentAddr}},
		{name: "trailing dot", query: "main.ws.me.coder.", want: []netip.Addr{agentAddr}},
		{name: "NXDOMAIN for a name the server does not know in that case", query: "MAIN.ws.me.coder", wantErr: "NameError"},
		{name: "unknown", query: "nope.coder", wantErr: "RCodeNameError"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := host.LookupAAAA(ctx, dnsAddr, tc.query)
			if tc.wantErr != "" {
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.wantErr)) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) || got[0] != tc.want[0] {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStackLookupTimesOut(t *testing.T) {
	host, _ := stackPair(t, 1280)
	// The tunnel side does not own this address, so it drops the queries
	// silently: only the context ends the lookup, which resends meanwhile.
	silent := netip.MustParseAddr("fd60:627a:a42b::99")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan error, 1)
	go func() {
		_, err := host.LookupAAAA(ctx, silent, "main.ws.me.coder")
		ended <- err
	}()
	// Wait for the second resend (every dnsRetry), however late a busy
	// machine runs the timer; the lookup must still be waiting then.
	deadline := time.After(10 * time.Second)
	for host.Stats().PacketsOut < 3 {
		select {
		case err := <-ended:
			t.Fatalf("the lookup ended by itself (%v) after %d packets", err, host.Stats().PacketsOut)
		case <-deadline:
			t.Fatalf("%d packets sent in 10 s, want the query resent every %s", host.Stats().PacketsOut, dnsRetry)
		case <-time.After(10 * time.Millisecond): // polling the stack's counters
		}
	}
	cancel()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want the context's error", err)
	}
}

func TestStackLookupRefused(t *testing.T) {
	host, _ := stackPair(t, 1280) // the DNS address exists but nothing listens
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := host.LookupAAAA(ctx, dnsAddr, "main.ws.me.coder")
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("refused")) {
		t.Fatalf("err = %v, want connection refused (ICMP port unreachable)", err)
	}
}

func TestStackCloseReleasesFDs(t *testing.T) {
	before := fdtest.Take(t)
	for range 3 {
		a, tf, err := NewSocketpair(1280)
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(int(tf.Fd()), 1280)
		if err != nil {
			t.Fatal(err)
		}
		tf.Close()
		a.Close()
		b.Close()
		a.Close() // idempotent
	}
	before.Check(t, fdtest.Sockets, "three stacks")
}
