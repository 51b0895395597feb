// Command wakeups counts, in a Go execution trace, the goroutine wake-ups
// by where each woken goroutine had been waiting, and sorts them into ours
// (codervpn), the engine's (Coder's tailnet, tailscale, wireguard-go) and
// the rest (the runtime, the standard library, the trace itself). It is how bench/RESULTS.md
// says whose timers and channels keep an idle tunnel busy (issue 18):
//
//	go run ./bench/internal/wakeups [-top 30] trace.out
//
// A wake-up is a goroutine going from waiting to runnable, or a new
// goroutine (counted under the function it starts in); a goroutine back
// from a system call is counted apart. The place a goroutine waited is the
// first frame of its blocking stack in our code or the engine's (else the
// first outside the runtime, sync, time and context packages), so a
// timer's select counts under the loop that selects and a socket read
// under whoever reads.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/exp/trace"
)

func main() {
	top := flag.Int("top", 30, "places to list")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: wakeups [-top n] trace.out")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *top, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "wakeups:", err)
		os.Exit(1)
	}
}

// counts is the tally of one trace.
type counts struct {
	byPlace  map[string]int
	spawned  map[string]int
	syscalls map[string]int
	procs    int // a P going from idle to running: a thread woken to run Go code
	first    trace.Time
	last     trace.Time
}

func run(path string, top int, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	c := counts{byPlace: map[string]int{}, spawned: map[string]int{}, syscalls: map[string]int{}}
	waitedAt := map[trace.GoID]string{}
	for {
		ev, err := r.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if c.first == 0 {
			c.first = ev.Time()
		}
		c.last = ev.Time()
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		switch st.Resource.Kind {
		case trace.ResourceProc:
			if from, to := st.Proc(); from == trace.ProcIdle && to == trace.ProcRunning {
				c.procs++
			}
		case trace.ResourceGoroutine:
			id := st.Resource.Goroutine()
			from, to := st.Goroutine()
			switch {
			case from == trace.GoNotExist && to == trace.GoRunnable:
				c.spawned[place(st.Stack)]++
			case to == trace.GoWaiting:
				waitedAt[id] = place(st.Stack)
			case from == trace.GoWaiting && to == trace.GoRunnable:
				p, ok := waitedAt[id]
				if !ok {
					p = "(waiting since before the trace)"
				}
				c.byPlace[p]++
			case to == trace.GoSyscall:
				waitedAt[id] = place(st.Stack)
			case from == trace.GoSyscall:
				c.syscalls[waitedAt[id]]++
			}
		}
	}
	report(w, &c, top)
	return nil
}

// place is the first frame of s that says whose code waited: the first
// of ours or the engine's, else the first outside the plumbing.
func place(s trace.Stack) string {
	first, outside := "", ""
	for f := range s.Frames() {
		if first == "" {
			first = f.Func
		}
		if outside == "" && !plumbing(f.Func) {
			outside = f.Func
		}
		if owner(f.Func) != "other" {
			return f.Func
		}
	}
	return cmp.Or(outside, first, "(no stack)")
}

// plumbing reports whether fn is the waiting itself rather than whose wait
// it is.
func plumbing(fn string) bool {
	for _, p := range []string{"runtime.", "sync.", "time.", "context.", "internal/", "syscall.", "golang.org/x/sys/", "os."} {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

// owner sorts a place into ours, the engine's, or the rest.
func owner(place string) string {
	switch {
	case strings.HasPrefix(place, "github.com/codervpn/"):
		return "ours"
	case strings.HasPrefix(place, "tailscale.com/"), strings.HasPrefix(place, "github.com/coder/"),
		strings.HasPrefix(place, "github.com/tailscale/"), strings.HasPrefix(place, "gvisor.dev/"):
		return "engine"
	default:
		return "other"
	}
}

func report(w io.Writer, c *counts, top int) {
	secs := float64(c.last-c.first) / 1e9
	perMin := func(n int) float64 {
		if secs <= 0 {
			return 0
		}
		return float64(n) / secs * 60
	}
	total := map[string]int{}
	all := map[string]int{}
	for _, m := range []map[string]int{c.byPlace, c.spawned, c.syscalls} {
		for p, n := range m {
			total[owner(p)] += n
			all[p] += n
		}
	}
	sum := total["ours"] + total["engine"] + total["other"]
	fmt.Fprintf(w, "trace: %.1f s; processors woken from idle: %d (%.0f/min)\n", secs, c.procs, perMin(c.procs))
	fmt.Fprintf(w, "goroutine wake-ups: %d (%.0f/min): ours %d (%.0f/min), engine %d (%.0f/min), other %d (%.0f/min)\n",
		sum, perMin(sum), total["ours"], perMin(total["ours"]), total["engine"], perMin(total["engine"]),
		total["other"], perMin(total["other"]))
	type row struct {
		place string
		n     int
	}
	var rows []row
	for p, n := range all {
		rows = append(rows, row{p, n})
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Or(cmp.Compare(b.n, a.n), strings.Compare(a.place, b.place)) })
	fmt.Fprintf(w, "%8s %8s %8s %8s  %-6s %s\n", "per min", "woken", "spawned", "syscall", "owner", "where it waited")
	for i, r := range rows {
		if i == top {
			break
		}
		fmt.Fprintf(w, "%8.0f %8d %8d %8d  %-6s %s\n", perMin(r.n), c.byPlace[r.place], c.spawned[r.place], c.syscalls[r.place],
			owner(r.place), r.place)
	}
}
