package bench

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"cdr.dev/slog/v3"

	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// rounds is how many times each path is measured; paths alternate so that
// a slow moment of the machine hurts both, and the median is reported.
const rounds = 3

// BenchmarkThroughput moves one TCP stream to an agent's sink through the
// tunnel (the host's userspace IP stack → utun socketpair → our tunnel →
// engine → agent) and, alternately, through baseline (a): the same engine
// without a tunnel device, dialing from its own netstack. Over direct UDP
// the tunnel is also compared with baseline (b), two plain wireguard-go
// devices on loopback: the ceiling of WireGuard in Go on this CPU.
func BenchmarkThroughput(b *testing.B) {
	cases := []struct {
		name string
		opts vpntest.Options
		size int64
	}{
		{"direct", vpntest.Options{}, 64 << 20},
		{"derp", vpntest.Options{BlockDirect: true}, 32 << 20},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			w := newWorld(ctx, b, tc.opts, 1)
			h := startTunnel(ctx, b, w, hosttest.Options{})
			client, err := w.d.Dial(ctx, slog.Logger{})
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			paths := []dialer{h.DialTCP, func(ctx context.Context, a netip.AddrPort) (net.Conn, error) {
				return client.Conn.DialContextTCP(ctx, a)
			}}
			agent := w.agents[0]
			results := make([][]float64, len(paths))
			for i, p := range paths { // warm up: handshakes, DERP connections
				if _, err := sendToSink(ctx, p, agent, 1<<20); err != nil {
					b.Fatalf("path %d: %v", i, err)
				}
			}
			b.ResetTimer()
			for range rounds {
				for i, p := range paths {
					r, err := sendToSink(ctx, p, agent, tc.size)
					if err != nil {
						b.Fatalf("path %d: %v", i, err)
					}
					results[i] = append(results[i], r)
				}
			}
			b.StopTimer()
			tun, eng := median(results[0]), median(results[1])
			b.ReportMetric(tun/1e6, "tunnel-MB/s")
			b.ReportMetric(eng/1e6, "engine-MB/s")
			report(row{"throughput", "one TCP stream, " + tc.name + ": tunnel vs engine alone (a)",
				mbps(tun), mbps(eng), ratio(tun, eng), ">= 0.90"})
			if tc.name != "direct" {
				return
			}
			var wg []float64
			for range rounds {
				r, err := wireguardGoThroughput(ctx, tc.size)
				if err != nil {
					b.Fatal(err)
				}
				wg = append(wg, r)
			}
			ceiling := median(wg)
			b.ReportMetric(ceiling/1e6, "wireguard-go-MB/s")
			report(row{"throughput", "direct: tunnel vs two wireguard-go devices (b)",
				mbps(tun), mbps(ceiling), ratio(tun, ceiling), "report"})
		})
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
