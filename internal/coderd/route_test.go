package coderd

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"cdr.dev/slog/v3"
)

// TestRouteWatch: a failed dial warns, once, when the route to the
// deployment left the device of the last successful dial, naming both; it
// says nothing when the route did not move or was never known.
func TestRouteWatch(t *testing.T) {
	sink := &healthSink{}
	logger := slog.Make(sink).Leveled(slog.LevelDebug)
	ctx := context.Background()
	deployment := netip.MustParseAddr("10.214.1.1")
	current := route{To: deployment, Dev: "wlan0", Gw: netip.MustParseAddr("192.168.1.1")}
	w := newRouteWatch()
	w.lookup = func(a netip.Addr) (route, error) {
		r := current
		r.To = a
		return r, nil
	}

	w.check(ctx, logger) // nothing reached yet: nothing to compare with
	w.connected(&net.TCPAddr{IP: deployment.AsSlice(), Port: 443})
	w.check(ctx, logger) // same route: the deployment itself is down
	if got := sink.lines(slog.LevelInfo); len(got) != 0 {
		t.Fatalf("warned without a route change: %q", got)
	}

	current = route{To: deployment, Dev: "tun1"}
	w.check(ctx, logger)
	w.check(ctx, logger)
	got := sink.lines(slog.LevelWarn)
	if len(got) != 1 {
		t.Fatalf("want one warning for the change, got %q", got)
	}
	if !strings.Contains(got[0], "tun1") || !strings.Contains(got[0], "wlan0") {
		t.Fatalf("the warning does not name both devices: %q", got[0])
	}
	fields := sink.entries[len(sink.entries)-1].Fields
	if len(fields) != 2 || fields[0].Value != "10.214.1.1 dev tun1" || fields[1].Value != "10.214.1.1 via 192.168.1.1 dev wlan0" {
		t.Fatalf("route fields %v", fields)
	}
}
