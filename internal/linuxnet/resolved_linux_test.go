package linuxnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/codervpn/codervpn/internal/dbustest"
)

// fakeResolved implements the part of org.freedesktop.resolve1.Manager we
// call, recording calls. failMethod makes one method return an error.
type fakeResolved struct {
	mu         sync.Mutex
	calls      []string
	failMethod string
}

func (f *fakeResolved) record(method string, args ...any) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%s%v", method, args))
	if method == f.failMethod {
		return dbus.NewError("org.freedesktop.DBus.Error.AccessDenied", []any{"denied by test"})
	}
	return nil
}

func (f *fakeResolved) SetLinkDNS(idx int32, addrs []resolvedAddr) *dbus.Error {
	var s []string
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.Address)
		s = append(s, fmt.Sprintf("%d:%s", a.Family, ip))
	}
	return f.record("SetLinkDNS", idx, s)
}

func (f *fakeResolved) SetLinkDomains(idx int32, doms []resolvedDomain) *dbus.Error {
	var s []string
	for _, d := range doms {
		if d.RoutingOnly {
			s = append(s, "~"+d.Domain)
		} else {
			s = append(s, d.Domain)
		}
	}
	return f.record("SetLinkDomains", idx, s)
}

func (f *fakeResolved) SetLinkDefaultRoute(idx int32, on bool) *dbus.Error {
	return f.record("SetLinkDefaultRoute", idx, on)
}

func (f *fakeResolved) RevertLink(idx int32) *dbus.Error { return f.record("RevertLink", idx) }

func (f *fakeResolved) failOn(method string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failMethod = method
}

func (f *fakeResolved) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func serveFakeResolved(t *testing.T, addr string) *fakeResolved {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fakeResolved{}
	if err := conn.Export(f, resolvedPath, resolvedIface); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(resolvedName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own %s: %v (reply %d)", resolvedName, err, reply)
	}
	return f
}

func TestConnectResolvedNotRunning(t *testing.T) {
	addr := dbustest.Start(t)
	tests := []struct {
		name    string
		address string
		want    string
	}{
		{"bus without resolved", addr, "systemd-resolved is not running"},
		{"no bus at all", "unix:path=" + filepath.Join(t.TempDir(), "nobus"), "D-Bus is not reachable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dns, err := ConnectResolved(context.Background(), tc.address)
			if err != nil {
				t.Fatal(err)
			}
			defer dns.Close()
			nd, ok := dns.(NoDNS)
			if !ok || !strings.Contains(nd.Reason, tc.want) {
				t.Fatalf("got %#v, want NoDNS saying %q", dns, tc.want)
			}
		})
	}
}

func TestResolvedSplitDNS(t *testing.T) {
	addr := dbustest.Start(t)
	fake := serveFakeResolved(t, addr)
	dns, err := ConnectResolved(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	if _, ok := dns.(*Resolved); !ok {
		t.Fatalf("got %T, want *Resolved", dns)
	}
	ctx := context.Background()
	link := Link{Index: 42, Name: "coder0"}
	s := DNSSettings{
		Servers: []netip.Addr{netip.MustParseAddr("fd60:627a:a42b::53"), netip.MustParseAddr("100.100.100.100")},
		Domains: []string{"coder"}, Search: []string{"example.internal"},
	}
	if err := dns.SetDNS(ctx, link, s); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"SetLinkDNS[42 [10:fd60:627a:a42b::53 2:100.100.100.100]]",
		"SetLinkDomains[42 [~coder example.internal]]",
		"SetLinkDefaultRoute[42 false]",
	}
	if got := fake.take(); !slices.Equal(got, want) {
		t.Errorf("calls:\n got %q\nwant %q", got, want)
	}
	if err := dns.RevertDNS(ctx, link); err != nil {
		t.Fatal(err)
	}
	if got := fake.take(); !slices.Equal(got, []string{"RevertLink[42]"}) {
		t.Errorf("revert calls: %q", got)
	}

	// A refusal is reported as advice and rolled back, not half-applied.
	fake.failOn("SetLinkDomains")
	err = dns.SetDNS(ctx, link, s)
	var nc *NotConfiguredError
	if !errors.As(err, &nc) || !strings.Contains(nc.Error(), "refused the routing domains") ||
		!strings.Contains(nc.Error(), "dig @fd60:627a:a42b::53") {
		t.Fatalf("err = %v, want a NotConfiguredError explaining the refusal", err)
	}
	if got := fake.take(); len(got) != 3 || got[2] != "RevertLink[42]" {
		t.Errorf("calls after refusal: %q; want SetLinkDNS, SetLinkDomains, RevertLink", got)
	}
}

// A bus that accepts the connection and then says nothing must not hang the
// host: the caller's context still ends the attempt.
func TestConnectResolvedSilentBus(t *testing.T) {
	path := filepath.Join(t.TempDir(), "silent")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	dns, err := ConnectResolved(ctx, "unix:path="+path)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ConnectResolved = %v, %v; want the context's deadline error", dns, err)
	}
	l.Close()
	for c := range accepted {
		c.Close()
	}
}
