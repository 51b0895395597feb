package netstack

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsRetry is how long a query waits for an answer before it is sent again;
// UDP through a tunnel that is still coming up can lose the first one.
const dnsRetry = 500 * time.Millisecond

// defaultDNSTimeout bounds a query whose context has no deadline.
const defaultDNSTimeout = 10 * time.Second

// Lookup sends one DNS query for name and type typ over UDP through the utun
// link to server port 53, resending it every half second until an answer
// with the query's id arrives or ctx ends. It returns the parsed answer
// whatever its RCode; LookupAAAA turns RCodes into errors.
func (n *Stack) Lookup(ctx context.Context, server netip.Addr, name string, typ dnsmessage.Type) (*dnsmessage.Message, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultDNSTimeout)
		defer cancel()
	}
	fqdn := name
	if !strings.HasSuffix(fqdn, ".") {
		fqdn += "."
	}
	qname, err := dnsmessage.NewName(fqdn)
	if err != nil {
		return nil, fmt.Errorf("dns name %q: %w", name, err)
	}
	id := uint16(rand.Uint32())
	query := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: qname, Type: typ, Class: dnsmessage.ClassINET}},
	}
	packed, err := query.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack dns query for %q: %w", name, err)
	}
	conn, err := n.DialUDP(netip.AddrPortFrom(server, 53))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	buf := make([]byte, 65535)
	for {
		if _, err := conn.Write(packed); err != nil {
			return nil, fmt.Errorf("send dns query for %q to %s: %w", name, server, err)
		}
		conn.SetReadDeadline(time.Now().Add(dnsRetry))
		for {
			nr, err := conn.Read(buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("dns query for %q to %s got no answer: %w", name, server, ctx.Err())
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // retry timer: send again
				}
				return nil, fmt.Errorf("dns query for %q to %s: %w", name, server, err)
			}
			msg, err := parseDNSReply(buf[:nr], id, qname, typ)
			if err != nil {
				continue // not ours or garbage: keep waiting
			}
			return msg, nil
		}
	}
}

// LookupAAAA asks server for the IPv6 addresses of name through the tunnel.
// A reply other than NOERROR is an error naming the RCode.
func (n *Stack) LookupAAAA(ctx context.Context, server netip.Addr, name string) ([]netip.Addr, error) {
	msg, err := n.Lookup(ctx, server, name, dnsmessage.TypeAAAA)
	if err != nil {
		return nil, err
	}
	if msg.RCode != dnsmessage.RCodeSuccess {
		return nil, fmt.Errorf("dns server %s answered %s for %q AAAA", server, msg.RCode, name)
	}
	return aaaaAnswers(msg), nil
}

// errNotOurReply marks a datagram that is not the answer to our question.
var errNotOurReply = errors.New("not a reply to this query")

// parseDNSReply parses b and checks it answers the query with id, name and
// type typ.
func parseDNSReply(b []byte, id uint16, name dnsmessage.Name, typ dnsmessage.Type) (*dnsmessage.Message, error) {
	var msg dnsmessage.Message
	if err := msg.Unpack(b); err != nil {
		return nil, fmt.Errorf("unpack dns reply: %w", err)
	}
	if !msg.Response || msg.ID != id {
		return nil, errNotOurReply
	}
	if len(msg.Questions) != 1 || msg.Questions[0].Type != typ ||
		!strings.EqualFold(msg.Questions[0].Name.String(), name.String()) {
		return nil, errNotOurReply
	}
	return &msg, nil
}

// aaaaAnswers returns the AAAA records of the answer section.
func aaaaAnswers(msg *dnsmessage.Message) []netip.Addr {
	var out []netip.Addr
	for _, rr := range msg.Answers {
		if aaaa, ok := rr.Body.(*dnsmessage.AAAAResource); ok {
			out = append(out, netip.AddrFrom16(aaaa.AAAA))
		}
	}
	return out
}
