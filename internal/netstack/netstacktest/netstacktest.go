// Package netstacktest has the servers a test puts on the far side of a
// netstack.Stack to play a peer: an echo service and a DNS server. They take
// plain net listeners, so they serve on any stack (or on the kernel's), and
// they are shared by the tests of internal/netstack and vpnlib/hosttest.
package netstacktest

import (
	"io"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// ServeEcho accepts connections on l and echoes each until l closes. The
// cleanup registered with t closes l and waits for the server to stop.
func ServeEcho(t testing.TB, l net.Listener) {
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

// ServeAAAA answers DNS queries on pc: AAAA queries for a fully qualified
// name in names (matched to the letter, so case matters) get its address,
// other types for such a name get an empty answer, and every other name
// gets NXDOMAIN. The cleanup registered with t closes pc and waits for the
// server to stop.
func ServeAAAA(t testing.TB, pc net.PacketConn, names map[string]netip.Addr) {
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
			if out, ok := answer(buf[:n], names); ok {
				pc.WriteTo(out, from)
			}
		}
	}()
}

// answer builds the reply to one query; false means the datagram is not a
// query with one question and is ignored.
func answer(query []byte, names map[string]netip.Addr) ([]byte, bool) {
	var q dnsmessage.Message
	if q.Unpack(query) != nil || len(q.Questions) != 1 {
		return nil, false
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
	return out, err == nil
}
