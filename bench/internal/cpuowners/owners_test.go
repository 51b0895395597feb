package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

// synthetic builds a CPU profile whose samples have the given stacks
// (leaf first) and CPU nanoseconds.
func synthetic(stacks [][]string, ns []int64) *profile.Profile {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     10_000_000,
	}
	fns := map[string]*profile.Function{}
	for i, st := range stacks {
		s := &profile.Sample{Value: []int64{1, ns[i]}}
		for _, name := range st {
			fn := fns[name]
			if fn == nil {
				fn = &profile.Function{ID: uint64(len(fns) + 1), Name: name}
				fns[name] = fn
				p.Function = append(p.Function, fn)
			}
			loc := &profile.Location{ID: uint64(len(p.Location) + 1), Line: []profile.Line{{Function: fn}}}
			p.Location = append(p.Location, loc)
			s.Location = append(s.Location, loc)
		}
		p.Sample = append(p.Sample, s)
	}
	return p
}

func TestBreakdown(t *testing.T) {
	p := synthetic([][]string{
		// our device's read: a system call made by us
		{"internal/runtime/syscall.Syscall6", "syscall.Syscall", "syscall.read", "internal/poll.(*FD).Read",
			"github.com/codervpn/codervpn/internal/tunfd.(*Device).Read", "golang.zx2c4.com/wireguard/device.(*Device).RoutineReadFromTUN"},
		// WireGuard's encryption
		{"golang.org/x/crypto/chacha20poly1305.(*chacha20poly1305).sealGeneric", "golang.zx2c4.com/wireguard/device.(*Peer).RoutineSequentialSender"},
		// the DERP client's write, a system call for the engine
		{"internal/runtime/syscall.Syscall6", "syscall.write", "net.(*conn).Write", "tailscale.com/derp.(*Client).send"},
		// a copy in Coder's device stand-in
		{"runtime.memmove", "main.(*utunDevice).Write", "golang.zx2c4.com/wireguard/device.(*Peer).RoutineSequentialReceiver"},
		// the collector, no program frame
		{"runtime.scanobject", "runtime.gcDrain", "runtime.gcBgMarkWorker"},
		// the scheduler
		{"runtime.futex", "runtime.notesleep", "runtime.schedule"},
		// an allocation over the memory limit returning pages first
		{"runtime.madvise", "runtime.sysUnusedOS", "runtime.(*pageAlloc).scavengeOne", "runtime.(*pageAlloc).scavenge",
			"runtime.(*mheap).allocSpan", "runtime.mallocgc", "tailscale.com/derp.(*Client).recv"},
		// no symbols
		{"", "runtime._ExternalCode"},
	}, []int64{4e9, 3e9, 2e9, 1e9, 5e8, 3e8, 2e8, 1e8})
	where, behalf, total := breakdown(p)
	if math.Abs(total-11.1) > 1e-9 {
		t.Errorf("total = %v s, want 11.1", total)
	}
	wantWhere := map[string]float64{syscall + ": read": 4, syscall + ": write": 2, crypto: 3, rt: 1.3, gc: 0.5, scav: 0.2, unknown: 0.1}
	wantBehalf := map[string]float64{ours: 4, engine: 5.2, bench: 1, gc: 0.5, rt: 0.3, unknown: 0.1}
	for _, c := range []struct {
		name      string
		got, want map[string]float64
	}{{"where", where, wantWhere}, {"behalf", behalf, wantBehalf}} {
		if len(c.got) != len(c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
			continue
		}
		for k, v := range c.want {
			if math.Abs(c.got[k]-v) > 1e-9 {
				t.Errorf("%s[%s] = %v, want %v (all: %v)", c.name, k, c.got[k], v, c.got)
			}
		}
	}
}

func TestOwner(t *testing.T) {
	for f, want := range map[string]string{
		"github.com/codervpn/codervpn/vpnlib.(*Tunnel).run": ours,
		"github.com/coder/coder/v2/tailnet.(*Conn).Foo":     engine,
		"tailscale.com/wgengine/magicsock.(*Conn).Send":     engine,
		"github.com/tailscale/wireguard-go/device.Foo":      engine,
		"gvisor.dev/gvisor/pkg/tcpip/stack.Foo":             engine,
		"crypto/internal/fips140/aes/gcm.seal":              crypto,
		"vendor/golang.org/x/crypto/chacha20.xor":           crypto,
		"net.(*conn).Write":                                 stdlib,
		"internal/poll.(*FD).Write":                         stdlib,
		"runtime.mallocgc":                                  rt,
		"main.(*utunDevice).Read":                           bench,
		"github.com/google/uuid.New":                        other,
		"runtime._ExternalCode":                             unknown,
	} {
		if got := owner(f); got != want {
			t.Errorf("owner(%q) = %q, want %q", f, got, want)
		}
	}
}

// TestReport writes a profile to a file and checks the printed tables.
func TestReport(t *testing.T) {
	p := synthetic([][]string{{"github.com/codervpn/codervpn/x.F"}, {"runtime.mallocgc", "tailscale.com/derp.G"}}, []int64{3e9, 1e9})
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := report(&out, path); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"4.00 s of CPU in 2 samples", "75.0 %", "25.0 %", "where (leaf frame)", "on whose behalf"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report has no %q:\n%s", want, out.String())
		}
	}
}
