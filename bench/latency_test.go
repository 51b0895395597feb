package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"cdr.dev/slog/v3"

	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// BenchmarkLatency measures round trips of a small request and answer (an
// HTTP GET of 32 bytes on a kept-alive connection) to an agent over direct
// UDP, through the tunnel and through baseline (a), alternating in blocks.
// What the tunnel adds is the difference of the medians.
func BenchmarkLatency(b *testing.B) {
	const perBlock, blocks = 100, 10
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := newWorld(ctx, b, vpntest.Options{}, 1)
	h := startTunnel(ctx, b, w, hosttest.Options{})
	client, err := w.d.Dial(ctx, slog.Logger{})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	agent := w.agents[0]
	addr := netip.AddrPortFrom(agent.Addr, agent.HTTPPort)
	var pingers []*pinger
	for _, d := range []dialer{h.DialTCP, func(ctx context.Context, a netip.AddrPort) (net.Conn, error) {
		return client.Conn.DialContextTCP(ctx, a)
	}} {
		p, err := newPinger(ctx, d, addr)
		if err != nil {
			b.Fatal(err)
		}
		defer p.c.Close()
		pingers = append(pingers, p)
	}
	samples := make([][]time.Duration, len(pingers))
	b.ResetTimer()
	for blk := range blocks + 1 {
		for i, p := range pingers {
			for range perBlock {
				d, err := p.roundTrip()
				if err != nil {
					b.Fatal(err)
				}
				if blk > 0 { // the first block warms up
					samples[i] = append(samples[i], d)
				}
			}
		}
	}
	b.StopTimer()
	tunMed, tunP99 := quantiles(samples[0])
	engMed, engP99 := quantiles(samples[1])
	b.ReportMetric(float64(tunMed.Microseconds()), "tunnel-median-µs")
	b.ReportMetric(float64(engMed.Microseconds()), "engine-median-µs")
	report(row{"latency", "small request round trip, median: tunnel vs engine alone (a)",
		us(tunMed), us(engMed), ratio(float64(tunMed), float64(engMed)), ""})
	report(row{"latency", "small request round trip, p99: tunnel vs engine alone (a)",
		us(tunP99), us(engP99), ratio(float64(tunP99), float64(engP99)), ""})
	report(row{"latency", "added by the tunnel (median)", us(tunMed - engMed), "", "", "<= 50 µs"})
}

// pinger sends GET /bytes?n=32 over one kept-alive connection.
type pinger struct {
	c   net.Conn
	r   *bufio.Reader
	req []byte
}

func newPinger(ctx context.Context, d dialer, addr netip.AddrPort) (*pinger, error) {
	c, err := dialRetry(ctx, d, addr)
	if err != nil {
		return nil, err
	}
	p := &pinger{c: c, r: bufio.NewReader(c), req: []byte("GET /bytes?n=32 HTTP/1.1\r\nHost: agent\r\n\r\n")}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	return p, nil
}

func (p *pinger) roundTrip() (time.Duration, error) {
	start := time.Now()
	if _, err := p.c.Write(p.req); err != nil {
		return 0, fmt.Errorf("send request: %w", err)
	}
	resp, err := http.ReadResponse(p.r, nil)
	if err != nil {
		return 0, fmt.Errorf("read answer: %w", err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != 32 {
		return 0, fmt.Errorf("answer of %d bytes: %v", n, err)
	}
	return time.Since(start), nil
}

// quantiles returns the median and the 99th percentile.
func quantiles(ds []time.Duration) (med, p99 time.Duration) {
	return quantile(ds, 0.5), quantile(ds, 0.99)
}

// quantile is the q-th quantile (0..1) of ds, nearest rank; ds is left
// in its order.
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)*int(math.Round(q*1000))/1000, len(s)-1)] // in thousandths: exact for 0.5, 0.99, 0.999
}

func addrHTTP(a *vpntest.Agent) netip.AddrPort { return netip.AddrPortFrom(a.Addr, a.HTTPPort) }
