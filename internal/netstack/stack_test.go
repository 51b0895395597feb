package hosttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

var (
	hostAddr  = netip.MustParseAddr("fd60:627a:a42b:1::1")
	agentAddr = netip.MustParseAddr("fd60:627a:a42b:2::2")
	dnsAddr   = netip.MustParseAddr("fd60:627a:a42b::53")
	prefix48  = netip.MustParsePrefix("fd60:627a:a42b::/48")
)

// netstackPair joins a host-side Netstack and a "tunnel"-side Netstack with a
// utun socketpair. The tunnel side answers for the agent and DNS addresses
// and routes everything back to the host.
func netstackPair(t *testing.T, mtu uint32) (host, tunnel *Netstack) {
	t.Helper()
	hf, tf, err := utunSocketpair()
	if err != nil {
		t.Fatal(err)
	}
	host, err = newNetstack(hf, mtu)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	tunnel, err = NewNetstack(int(tf.Fd()), mtu)
	tf.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tunnel.Close() })

	if err := host.Apply(NetConfig{
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

// serveEcho accepts connections on l and echoes each until l closes.
func serveEcho(t *testing.T, l net.Listener) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.Copy(c, c)
			c.Close()
		}
	}()
}

func TestNetstackTCPThroughUTun(t *testing.T) {
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
			host, tunnel := netstackPair(t, 1280)
			l, err := tunnel.ListenTCP(netip.AddrPortFrom(tc.listen, 8080))
			if err != nil {
				t.Fatal(err)
			}
			serveEcho(t, l)

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

func TestNetstackRespectsMTU(t *testing.T) {
	// The tunnel side reads raw frames: with MTU 1280 no frame may carry more
	// than 1280 bytes of IP packet.
	hf, tf, err := utunSocketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	host, err := newNetstack(hf, 1280)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if err := host.Apply(NetConfig{Addrs: []netip.Prefix{netip.PrefixFrom(hostAddr, 128)}, Routes: []netip.Prefix{prefix48}, MTU: 1280}); err != nil {
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

func TestNetstackDropsMalformedFrames(t *testing.T) {
	hf, tf, err := utunSocketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	host, err := newNetstack(hf, 1280)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	frames := [][]byte{
		{0, 0, 0},                          // short
		{0, 0, 0, 30},                      // header only
		{0, 0, 0, 10, 0x60, 0, 0, 0},       // Linux AF_INET6 number
		{0, 0, 0, 2, 0x60, 0, 0, 0},        // AF_INET label on IPv6
		{0, 0, 0, 30, 0x45, 0, 0, 0},       // AF_INET6 label on IPv4
		{0xff, 0xff, 0xff, 30, 0x60, 0, 0}, // high bytes set
	}
	for _, f := range frames {
		if _, err := tf.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return host.Stats().Malformed == uint64(len(frames)) })
	if s := host.Stats(); s.PacketsIn != 0 {
		t.Errorf("PacketsIn = %d, want 0", s.PacketsIn)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serveDNS answers AAAA queries on pc from names, NXDOMAIN for others.
func serveDNS(t *testing.T, pc net.PacketConn, names map[string]netip.Addr) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var q dnsmessage.Message
			if q.Unpack(buf[:n]) != nil || len(q.Questions) != 1 {
				continue
			}
			r := dnsmessage.Message{
				Header:    dnsmessage.Header{ID: q.ID, Response: true, Authoritative: true},
				Questions: q.Questions,
			}
			addr, ok := names[q.Questions[0].Name.String()]
			switch {
			case !ok:
				r.RCode = dnsmessage.RCodeNameError
			case q.Questions[0].Type == dnsmessage.TypeAAAA:
				r.Answers = []dnsmessage.Resource{{
					Header: dnsmessage.ResourceHeader{Name: q.Questions[0].Name, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET, TTL: 2},
					Body:   &dnsmessage.AAAAResource{AAAA: addr.As16()},
				}}
			}
			out, err := r.Pack()
			if err == nil {
				pc.WriteTo(out, from)
			}
		}
	}()
}

func TestNetstackLookupAAAA(t *testing.T) {
	host, tunnel := netstackPair(t, 1280)
	pc, err := tunnel.ListenUDP(netip.AddrPortFrom(dnsAddr, 53))
	if err != nil {
		t.Fatal(err)
	}
	serveDNS(t, pc, map[string]netip.Addr{"main.ws.me.coder.": agentAddr})

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

func TestNetstackLookupTimesOut(t *testing.T) {
	host, _ := netstackPair(t, 1280)
	// The tunnel side does not own this address, so it drops the queries
	// silently: only the deadline ends the lookup, after resending.
	silent := netip.MustParseAddr("fd60:627a:a42b::99")
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	_, err := host.LookupAAAA(ctx, silent, "main.ws.me.coder")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if out := host.Stats().PacketsOut; out < 3 {
		t.Errorf("%d packets sent, want the query resent at least twice", out)
	}
}

func TestNetstackLookupRefused(t *testing.T) {
	host, _ := netstackPair(t, 1280) // the DNS address exists but nothing listens
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := host.LookupAAAA(ctx, dnsAddr, "main.ws.me.coder")
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("refused")) {
		t.Fatalf("err = %v, want connection refused (ICMP port unreachable)", err)
	}
}

func TestNetstackCloseReleasesFDs(t *testing.T) {
	before := openFDs(t)
	for range 3 {
		hf, tf, err := utunSocketpair()
		if err != nil {
			t.Fatal(err)
		}
		a, err := newNetstack(hf, 1280)
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewNetstack(int(tf.Fd()), 1280)
		if err != nil {
			t.Fatal(err)
		}
		tf.Close()
		a.Close()
		b.Close()
		a.Close() // idempotent
	}
	if d := openFDs(t).diff(before); d != "[]" {
		t.Fatalf("fds changed: %s", d)
	}
}
