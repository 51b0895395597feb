package status

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
)

// Table renders rows as an aligned text table with a header line. With no
// rows it says so, because an empty table looks like a hang.
func Table(rows []Row) string {
	if len(rows) == 0 {
		return "No workspaces yet.\n"
	}
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKSPACE\tAGENT\tNAME\tADDRESS\tSTATE\tLATENCY\tPATH")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			dash(r.Workspace), dash(r.Agent), dash(r.Name),
			dash(strings.Join(r.Addresses, ", ")), dash(r.State),
			dash(FormatLatency(r.Latency)), dash(r.Path()))
	}
	_ = tw.Flush() // writes to a strings.Builder cannot fail
	return sb.String()
}

// FormatLatency prints a round trip the way people read pings: "0.8ms",
// "12ms", "1.2s"; "" for zero (unknown).
func FormatLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Round(time.Millisecond)/time.Millisecond)
	default:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
}

func dash(s string) string {
	// Trim so that a name made only of spaces cannot produce an empty-looking
	// cell that shifts the reader's eye to the next column.
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
