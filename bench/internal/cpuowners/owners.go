// Command cpuowners splits a CPU profile of a tunnel process by who owns
// the code the samples are in, for issue 18's question: what share of a
// transfer's CPU is ours (github.com/codervpn/...), what is the engine's
// (Coder's tailnet, tailscale, wireguard-go, gVisor), and what is
// crypto, the Go runtime and system calls.
//
// Usage: cpuowners cpu.pprof...
//
// It prints two tables per profile. "Where": each sample goes to the
// owner of its innermost frame (its leaf), so that crypto, system calls
// and the runtime show apart from the code that asked for them. "On
// whose behalf": each sample goes to the innermost frame that belongs to
// ours, the engine, the bench's codertunnel program or another module, so that a system
// call or a copy counts for the code that made it; samples with no such
// frame (the collector, the scheduler's idle loop) are the runtime's own.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/google/pprof/profile"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cpuowners cpu.pprof...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		if err := report(os.Stdout, path); err != nil {
			fmt.Fprintln(os.Stderr, "cpuowners:", err)
			os.Exit(1)
		}
	}
}

func report(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	where, behalf, total := breakdown(p)
	fmt.Fprintf(w, "%s: %.2f s of CPU in %d samples\n", path, total, len(p.Sample))
	printTable(w, "where (leaf frame)", where, total)
	printTable(w, "on whose behalf (innermost frame of a program's code)", behalf, total)
	return nil
}

func printTable(w io.Writer, title string, by map[string]float64, total float64) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  %s\t\t\t\n", title)
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return by[names[i]] > by[names[j]] })
	for _, n := range names {
		fmt.Fprintf(tw, "    %s\t%.2f s\t%.1f %%\t\n", n, by[n], 100*by[n]/total)
	}
	tw.Flush()
}

// breakdown attributes every sample's CPU time twice: to its leaf's owner
// (where) and to its innermost owner that is a program's code (behalf).
func breakdown(p *profile.Profile) (where, behalf map[string]float64, total float64) {
	vi := cpuValue(p)
	where, behalf = map[string]float64{}, map[string]float64{}
	for _, s := range p.Sample {
		v := float64(s.Value[vi]) / 1e9
		total += v
		frames := funcs(s)
		if len(frames) == 0 {
			where[unknown] += v
			behalf[unknown] += v
			continue
		}
		where[leafOwner(frames)] += v
		behalf[behalfOwner(frames)] += v
	}
	return where, behalf, total
}

// cpuValue is the index of the sample value in nanoseconds of CPU.
func cpuValue(p *profile.Profile) int {
	for i, st := range p.SampleType {
		if st.Type == "cpu" && st.Unit == "nanoseconds" {
			return i
		}
	}
	return len(p.SampleType) - 1
}

// funcs are a sample's function names, leaf first, inlined frames
// included (innermost first within a location, as pprof stores them).
func funcs(s *profile.Sample) []string {
	var out []string
	for _, l := range s.Location {
		for _, ln := range l.Line {
			// A frame in a library without symbols (the host's libc) has
			// an empty name: the runtime._ExternalCode above it says what
			// it was.
			if ln.Function != nil && ln.Function.Name != "" {
				out = append(out, ln.Function.Name)
			}
		}
	}
	return out
}

// The owners.
const (
	ours    = "ours (github.com/codervpn)"
	engine  = "engine (coder tailnet, tailscale, wireguard-go, gVisor)"
	bench   = "package main (codertunnel: its utun device; our library: the C ABI)"
	crypto  = "crypto"
	syscall = "system calls"
	gc      = "runtime: garbage collection"
	scav    = "runtime: returning memory (scavenger)"
	rt      = "runtime: scheduler, memory, other"
	stdlib  = "Go standard library, other"
	other   = "other module code"
	unknown = "C code (the C host, libc) or no symbol"
)

// leafOwner: system calls and the collector first, since their leaves are
// runtime or syscall frames whatever asked for them.
func leafOwner(frames []string) string {
	leaf := frames[0]
	switch {
	case isSyscall(leaf):
		return syscall + ": " + syscallName(frames)
	case inScavenge(frames):
		return scav
	case inGC(frames):
		return gc
	}
	return owner(leaf)
}

func behalfOwner(frames []string) string {
	for _, f := range frames {
		switch o := owner(f); o {
		case ours, engine, bench, other, unknown:
			return o
		}
	}
	switch {
	case inScavenge(frames):
		return scav
	case inGC(frames):
		return gc
	}
	return rt
}

// syscallWrappers are the functions that make any system call; the frame
// above them names which one.
var syscallWrappers = []string{"syscall.Syscall", "syscall.RawSyscall", "syscall.rawSyscall", "syscall.rawVforkSyscall",
	"internal/runtime/syscall/linux.Syscall6", "internal/runtime/syscall.Syscall6", "runtime/internal/syscall.Syscall6",
	"golang.org/x/sys/unix.Syscall", "golang.org/x/sys/unix.RawSyscall", "syscall.syscall"}

func isSyscall(f string) bool { return hasAny(f, syscallWrappers...) }

// syscallName is the call a system call sample is in: the first frame
// above the wrappers, without its package (write, recvfrom, EpollWait).
func syscallName(frames []string) string {
	for _, f := range frames {
		if isSyscall(f) {
			continue
		}
		if i := strings.LastIndex(f, "/"); i >= 0 {
			f = f[i+1:]
		}
		if _, name, ok := strings.Cut(f, "."); ok {
			return name
		}
		return f
	}
	return "?"
}

// inGC: a background mark worker, an allocation's assist or the sweeper.
func inGC(frames []string) bool {
	for _, f := range frames {
		if hasAny(f, "runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep") {
			return true
		}
	}
	return false
}

// inScavenge: the runtime handing free pages back to the system, in the
// background or inline in an allocation that would pass the memory limit;
// it shows apart because a soft memory limit (ours, internal/memlimit)
// makes it run more.
func inScavenge(frames []string) bool {
	for _, f := range frames {
		if hasAny(f, "runtime.(*pageAlloc).scavenge", "runtime.bgscavenge", "runtime.(*scavengerState)") {
			return true
		}
	}
	return false
}

func hasAny(f string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(f, p) {
			return true
		}
	}
	return false
}

// owner of one function by its import path.
func owner(f string) string {
	switch {
	case f == "runtime._ExternalCode": // a sample in C code: the host's, libc
		return unknown
	case hasAny(f, "github.com/codervpn/"):
		return ours
	case hasAny(f, "crypto/", "golang.org/x/crypto/", "vendor/golang.org/x/crypto/"):
		return crypto
	case hasAny(f, "github.com/coder/coder/v2/", "tailscale.com/", "golang.zx2c4.com/wireguard",
		"github.com/tailscale/wireguard-go", "gvisor.dev/"):
		return engine
	case hasAny(f, "main."):
		return bench
	case hasAny(f, "runtime.", "internal/runtime/", "runtime/internal/", "internal/bytealg.", "aeshash", "gogo", "memeqbody"):
		return rt
	case isStd(f):
		return stdlib
	}
	return other
}

// isStd: a standard library import path has no dot in its first element
// (a function of a one-element path, net.(*conn).Read, is std too).
func isStd(f string) bool {
	first, _, ok := strings.Cut(f, "/")
	return !ok || !strings.Contains(first, ".")
}
