package vpntest_test

import (
	"context"
	"encoding/binary"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// TestEndToEnd connects a client made of Coder's own client libraries to
// the deployment and reaches an agent's HTTP, sink and source services over
// the tailnet, in each transport mode the deployment offers.
func TestEndToEnd(t *testing.T) {
	cases := []struct {
		name string
		opts vpntest.Options
		// wantP2P: the path must become direct; false: it must stay on DERP.
		wantP2P bool
	}{
		{name: "DirectAllowed", opts: vpntest.Options{}, wantP2P: true},
		{name: "BlockDirect", opts: vpntest.Options{BlockDirect: true}},
		{name: "DERPForceWebSockets", opts: vpntest.Options{BlockDirect: true, DERPForceWebSockets: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			tc.opts.Logger = testLogger(t).Named("deployment")
			d := vpntest.New(t, tc.opts)
			a, err := d.AddRunningAgent(ctx, "dev", "main")
			if err != nil {
				t.Fatal(err)
			}

			c := newCoderClient(ctx, t, d)
			if c.connInfo.DisableDirectConnections != tc.opts.BlockDirect ||
				c.connInfo.DERPForceWebSockets != tc.opts.DERPForceWebSockets ||
				c.connInfo.HostnameSuffix != "coder" {
				t.Fatalf("connection info %+v does not reflect options %+v", c.connInfo, tc.opts)
			}
			c.waitForAgent(ctx, t, a.ID)
			c.waitHello(ctx, t, a)

			body, err := c.httpGet(ctx, a, "/bytes?n=100000")
			if err != nil {
				t.Fatalf("GET /bytes: %v", err)
			}
			if len(body) != 100000 || !strings.HasPrefix(body, "abcdefghijklmnopqrstuvwxyzabc") {
				t.Fatalf("GET /bytes returned %d bytes starting %q", len(body), body[:min(len(body), 30)])
			}

			checkSink(ctx, t, c, a, 1<<20)
			checkSource(ctx, t, c, a, 1<<20)
			checkPath(ctx, t, c, a, tc.wantP2P)

			if tc.opts.DERPForceWebSockets {
				derpReqs := d.RequestsTo("/derp")
				if len(derpReqs) == 0 {
					t.Fatal("no DERP connection was recorded")
				}
				for _, r := range derpReqs {
					if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
						t.Errorf("DERP request with Upgrade %q, want websocket", r.Header.Get("Upgrade"))
					}
				}
			}
		})
	}
}

// checkSink sends n bytes to the sink and expects it to report n received.
func checkSink(ctx context.Context, t *testing.T, c *coderClient, a *vpntest.Agent, n int) {
	t.Helper()
	conn, err := c.conn.DialContextTCP(ctx, netip.AddrPortFrom(a.Addr, a.SinkPort))
	if err != nil {
		t.Fatalf("dial sink: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write(make([]byte, n)); err != nil {
		t.Fatalf("write to sink: %v", err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatalf("half-close sink: %v", err)
	}
	var got [8]byte
	if _, err := io.ReadFull(conn, got[:]); err != nil {
		t.Fatalf("read sink count: %v", err)
	}
	if c := binary.BigEndian.Uint64(got[:]); c != uint64(n) {
		t.Fatalf("sink counted %d bytes, sent %d", c, n)
	}
}

// checkSource asks the source for n bytes and expects exactly n, then EOF.
func checkSource(ctx context.Context, t *testing.T, c *coderClient, a *vpntest.Agent, n int) {
	t.Helper()
	conn, err := c.conn.DialContextTCP(ctx, netip.AddrPortFrom(a.Addr, a.SourcePort))
	if err != nil {
		t.Fatalf("dial source: %v", err)
	}
	defer conn.Close()
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], uint64(n))
	if _, err := conn.Write(req[:]); err != nil {
		t.Fatalf("write source request: %v", err)
	}
	got, err := io.Copy(io.Discard, conn)
	if err != nil {
		t.Fatalf("read source: %v", err)
	}
	if got != int64(n) {
		t.Fatalf("source sent %d bytes, asked for %d", got, n)
	}
}

// checkPath pings the agent: with direct allowed the path must become
// peer-to-peer; with direct blocked it must stay on the embedded relay.
func checkPath(ctx context.Context, t *testing.T, c *coderClient, a *vpntest.Agent, wantP2P bool) {
	t.Helper()
	var last string
	waitFor(ctx, t, "the expected network path", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, p2p, res, err := c.conn.Ping(pctx, a.Addr)
		if err != nil {
			last = err.Error()
			return false
		}
		last = res.Endpoint
		if wantP2P {
			return p2p
		}
		if p2p {
			t.Fatalf("direct path %s used although direct connections are blocked", res.Endpoint)
		}
		return res.DERPRegionID == vpntest.EmbeddedRegionID
	}, func() string { return "last ping: " + last })
}
