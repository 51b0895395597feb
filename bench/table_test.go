package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// row is one line of the results table.
type row struct {
	section, metric, value, baseline, ratio, target string
}

var (
	rowsMu sync.Mutex
	rows   []row
)

// report adds a line to the table printed after every benchmark ran.
func report(r row) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	rows = append(rows, r)
}

func TestMain(m *testing.M) {
	code := m.Run()
	rowsMu.Lock()
	defer rowsMu.Unlock()
	if len(rows) > 0 {
		printTable(os.Stdout, rows)
		if path := os.Getenv("CODERVPN_BENCH_MARKDOWN"); path != "" {
			if err := writeMarkdown(path, rows); err != nil {
				fmt.Fprintln(os.Stderr, err)
				code = 1
			}
		}
	}
	os.Exit(code)
}

func printTable(w io.Writer, rs []row) {
	head := row{"section", "metric", "value", "baseline", "ratio", "target"}
	all := append([]row{head}, rs...)
	width := make([]int, 6)
	for _, r := range all {
		for i, c := range r.cells() {
			width[i] = max(width[i], len(c))
		}
	}
	fmt.Fprintln(w)
	for i, r := range all {
		var b strings.Builder
		for j, c := range r.cells() {
			fmt.Fprintf(&b, "%-*s  ", width[j], c)
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		if i == 0 {
			fmt.Fprintln(w, strings.Repeat("-", sum(width)+2*5))
		}
	}
}

func writeMarkdown(path string, rs []row) error {
	var b strings.Builder
	b.WriteString("| section | metric | value | baseline | ratio | target |\n|---|---|---|---|---|---|\n")
	for _, r := range rs {
		b.WriteString("| " + strings.Join(r.cells(), " | ") + " |\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func (r row) cells() []string {
	return []string{r.section, r.metric, r.value, r.baseline, r.ratio, r.target}
}

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
}

// Formatting helpers for the table.
func mbps(bytesPerSec float64) string { return fmt.Sprintf("%.0f MB/s", bytesPerSec/1e6) }
func ratio(a, b float64) string       { return fmt.Sprintf("%.2f", a/b) }
func ms(d time.Duration) string       { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) string       { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }
func mib(kb int64) string             { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }
