package coderd

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"cdr.dev/slog/v3"
)

// fakeRoutes is a kernel routing table for routeWatch: every address takes
// the current route.
type fakeRoutes struct{ current route }

func (f *fakeRoutes) lookup(a netip.Addr) (route, error) {
	r := f.current
	r.To = a
	return r, nil
}

// TestRouteWatch: a network change reports, once, a route to the
// deployment that left the device it was reached by, naming both devices:
// as a warning when the new device is a VPN's, as info when it is an
// uplink; a dial that fails since turns the info into a warning. Nothing is
// said when the route did not move or was never known, and a change that
// ended and came back is reported again.
func TestRouteWatch(t *testing.T) {
	sink := &healthSink{}
	logger := slog.Make(sink).Leveled(slog.LevelDebug)
	ctx := context.Background()
	control := netip.MustParseAddr("10.214.1.1")
	relay := netip.MustParseAddr("10.214.1.2")
	wlan := route{Dev: "wlan0", Gw: netip.MustParseAddr("192.168.1.1")}
	table := &fakeRoutes{current: wlan}
	w := newRouteWatch()
	w.lookup = table.lookup

	w.check(ctx, logger, networkChanged) // nothing reached yet: nothing to compare with
	w.connected(&net.TCPAddr{IP: control.AsSlice(), Port: 443})
	w.reached(relay)
	w.check(ctx, logger, networkChanged) // same route
	w.check(ctx, logger, dialFailed)     // same route: the deployment itself is down
	if got := sink.lines(slog.LevelInfo); len(got) != 0 {
		t.Fatalf("reported without a route change: %q", got)
	}

	// Another VPN's TUN takes both addresses: one warning, at once.
	table.current = route{Dev: "tun1", Tunnel: true}
	w.check(ctx, logger, networkChanged)
	w.check(ctx, logger, networkChanged)
	w.check(ctx, logger, dialFailed)
	got := sink.lines(slog.LevelInfo)
	if len(got) != 1 || !strings.HasPrefix(got[0], "WARN another VPN") {
		t.Fatalf("want one warning that another VPN took the route, got %q", got)
	}
	if !strings.Contains(got[0], "tun1") || !strings.Contains(got[0], "wlan0") {
		t.Fatalf("the warning does not name both devices: %q", got[0])
	}
	fields := sink.entries[len(sink.entries)-1].Fields
	if len(fields) != 3 || fields[0].Value != "10.214.1.1 dev tun1" || fields[1].Value != "10.214.1.1 via 192.168.1.1 dev wlan0" {
		t.Fatalf("route fields %v", fields)
	}
	if addrs, _ := fields[2].Value.([]string); len(addrs) != 2 {
		t.Fatalf("the warning names addresses %v, want both the control host's and the relay's", fields[2].Value)
	}

	// The VPN goes away and comes back: a new change, a new warning.
	table.current = wlan
	w.check(ctx, logger, networkChanged)
	table.current = route{Dev: "tun1", Tunnel: true}
	w.check(ctx, logger, networkChanged)
	if got := sink.lines(slog.LevelInfo); len(got) != 2 {
		t.Fatalf("want a second warning when the VPN took the route again, got %q", got)
	}

	// A new uplink is news, not a warning, until a dial fails through it.
	table.current = route{Dev: "eth0", Gw: netip.MustParseAddr("192.168.2.1")}
	w.check(ctx, logger, networkChanged)
	w.check(ctx, logger, networkChanged)
	got = sink.lines(slog.LevelInfo)
	if len(got) != 3 || !strings.HasPrefix(got[2], "INFO") || !strings.Contains(got[2], "eth0") {
		t.Fatalf("want one info line for the new uplink, got %q", got)
	}
	w.check(ctx, logger, dialFailed)
	w.check(ctx, logger, dialFailed)
	got = sink.lines(slog.LevelWarn)
	if len(got) != 3 || !strings.Contains(got[2], "cannot be reached that way") {
		t.Fatalf("want a warning once a dial through the new uplink failed, got %q", got)
	}

	// A dial through the new uplink succeeds: it is the good route now.
	w.connected(&net.TCPAddr{IP: control.AsSlice(), Port: 443})
	w.reached(relay)
	w.check(ctx, logger, networkChanged)
	if got := sink.lines(slog.LevelInfo); len(got) != 4 {
		t.Fatalf("reported a route that the deployment was reached by: %q", got)
	}
}
