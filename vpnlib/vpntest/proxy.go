package vpntest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
)

// Proxy is a TCP forwarder on 127.0.0.1 in front of a deployment that a test
// can cut and restore. A client given Proxy.URL instead of Deployment.URL
// loses the deployment (REST, control connection and, since clients point the
// embedded relay at the URL they use, DERP) when the proxy is cut, while the
// agents, which talk to the deployment directly, keep running: the
// deployment is down or unreachable for that client only.
type Proxy struct {
	// URL is the target URL with the proxy's address as its host.
	URL *url.URL

	addr   string // the proxy's listening address, kept across Cut/Restore
	target string // host:port forwarded to

	mu       sync.Mutex
	ln       net.Listener // nil while cut
	conns    map[net.Conn]struct{}
	accepted int
	closed   bool
	wg       sync.WaitGroup
}

// NewProxy is StartProxy for tests: it fails t on error and registers Close
// with t.Cleanup.
func NewProxy(t TB, target *url.URL) *Proxy {
	t.Helper()
	p, err := StartProxy(target)
	if err != nil {
		t.Fatalf("start the proxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// StartProxy listens on a free port of 127.0.0.1 and forwards every
// connection to target's host.
func StartProxy(target *url.URL) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the proxy: %w", err)
	}
	u := *target
	u.Host = ln.Addr().String()
	p := &Proxy{URL: &u, addr: u.Host, target: target.Host, conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	return p, nil
}

// Cut makes the deployment unreachable through the proxy: the listener
// closes (new connections are refused, as by a host that is down) and every
// forwarded connection is closed at once.
func (p *Proxy) Cut() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	for c := range conns {
		_ = c.Close()
	}
}

// Restore listens again on the same address after Cut. It fails if the port
// was taken meanwhile (unlikely on loopback) or the proxy is closed.
func (p *Proxy) Restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("restore the proxy: it is closed")
	}
	if p.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("restore the proxy on %s: %w", p.addr, err)
	}
	p.serveLocked(ln)
	return nil
}

// Accepted is how many connections the proxy has accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close cuts the proxy for good and waits for its goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serveLocked(ln)
}

func (p *Proxy) serveLocked(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by Cut or Close
			}
			p.forward(ln, c)
		}
	}()
}

// forward pipes c to a new connection to the target, unless ln was cut
// while c was being accepted.
func (p *Proxy) forward(ln net.Listener, c net.Conn) {
	p.mu.Lock()
	if p.ln != ln {
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.accepted++
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		defer p.forget(c)
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			return
		}
		if !p.track(ln, up) {
			_ = up.Close()
			return
		}
		defer p.forget(up)
		done := make(chan struct{})
		go func() {
			defer close(done)
			copyPlain(up, c)
			_ = up.Close()
		}()
		copyPlain(c, up)
		_ = c.Close()
		<-done
	}()
}

// track registers up with the connections Cut closes; it refuses when the
// listener that accepted the client side was cut meanwhile.
func (p *Proxy) track(ln net.Listener, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != ln {
		return false
	}
	p.conns[up] = struct{}{}
	return true
}

func (p *Proxy) forget(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// copyPlain copies without splice(2): io.Copy between two TCP connections
// splices through pipes from a pool the garbage collector drains, and those
// would show up as fds leaked by the test using the proxy.
func copyPlain(dst io.Writer, src io.Reader) {
	_, _ = io.Copy(struct{ io.Writer }{dst}, struct{ io.Reader }{src})
}
