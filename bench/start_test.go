package bench

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// BenchmarkStart times a tunnel's start against a deployment with three
// agents, as the user lives it: the handshake, then from the StartRequest
// to the settings applied, the StartResponse, the PeerUpdate listing the
// agents, and the first byte of an agent's answer. Medians of five starts.
func BenchmarkStart(b *testing.B) {
	const trials = 5
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := newWorld(ctx, b, vpntest.Options{}, 3)
	steps := []string{"handshake", "settings applied", "StartResponse", "PeerUpdate with the agents", "first byte from an agent"}
	times := make([][]time.Duration, len(steps))
	b.ResetTimer()
	for range trials {
		got, err := timeStart(ctx, b, w)
		if err != nil {
			b.Fatal(err)
		}
		for i, d := range got {
			times[i] = append(times[i], d)
		}
	}
	b.StopTimer()
	for i, name := range steps {
		s := slices.Clone(times[i])
		slices.Sort(s)
		med := s[len(s)/2]
		metric, target := "StartRequest → "+name, ""
		switch i {
		case 0:
			metric = "tunnel created → handshake done"
		case len(steps) - 1:
			target = "<= 150 ms"
			b.ReportMetric(float64(med.Microseconds())/1000, "ms-to-first-byte")
		}
		report(row{"start", metric, ms(med), "", "", target})
	}
}

// timeStart runs one tunnel start and returns the handshake time and the
// time from the StartRequest to each later step.
func timeStart(ctx context.Context, b *testing.B, w world) ([]time.Duration, error) {
	h := hosttest.New(b, hosttest.Options{})
	defer h.Close()
	tunFile, read, write := h.TunnelFiles()
	created := time.Now()
	tun, err := vpnlib.NewTunnel(vpnlib.TunnelConfig{TunFD: int(tunFile.Fd()), RPCRead: read, RPCWrite: write})
	if err != nil {
		return nil, err
	}
	defer tun.Close()
	if err := h.Connect(ctx); err != nil {
		return nil, err
	}
	handshake := time.Since(created)

	start := time.Now()
	settled, peers := make(chan time.Duration, 1), make(chan time.Duration, 1)
	go func() {
		_, _ = h.WaitSettings(ctx, nil)
		settled <- time.Since(start)
	}()
	go func() {
		_, _ = h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool {
			return s.Agent("dev", "main") != nil && s.Agent("dev", "second") != nil && s.Agent("dev", "third") != nil
		})
		peers <- time.Since(start)
	}()
	resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: w.d.URL.String(), ApiToken: w.d.Token})
	if err != nil || !resp.GetSuccess() {
		return nil, fmt.Errorf("StartRequest: %v %v", resp, err)
	}
	started := time.Since(start)
	agent := w.agents[0]
	c, err := dialRetry(ctx, h.DialTCP, netip.AddrPortFrom(agent.Addr, agent.HTTPPort))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: agent\r\n\r\n")); err != nil {
		return nil, err
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return nil, fmt.Errorf("first byte: %w", err)
	}
	firstByte := time.Since(start)
	if _, err := h.Stop(ctx); err != nil {
		return nil, err
	}
	return []time.Duration{handshake, <-settled, started, <-peers, firstByte}, nil
}
