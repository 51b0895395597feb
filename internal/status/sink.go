package status

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// EventType names what happened. The values are the "type" field of `--json`.
type EventType string

const (
	// EventProgress is a step on the way up or down ("connecting to ...").
	EventProgress EventType = "progress"
	// EventNotice is something the person should act on or know, such as DNS
	// not being configured.
	EventNotice EventType = "notice"
	// EventLog is a log record forwarded by the tunnel.
	EventLog EventType = "log"
	// EventPeers is the full current table; emitted when it changes.
	EventPeers EventType = "peers"
	// EventError is the error that ends the run.
	EventError EventType = "error"
	// EventStopped is the last event of a clean stop.
	EventStopped EventType = "stopped"
)

// Event is one thing to tell the user. Only the fields its Type uses are set.
type Event struct {
	Time    time.Time
	Type    EventType
	Message string
	// Level is the log level ("debug", "info", ...) of an EventLog.
	Level string
	// Fields are an EventLog's structured fields.
	Fields map[string]string
	// Peers is the table of an EventPeers.
	Peers []Row
}

// Sink shows events to someone. Implementations are safe for concurrent use,
// because tunnel logs and peer updates arrive on different goroutines.
type Sink interface {
	Emit(Event)
}

// Text prints events for a person: progress and notices as lines, peer
// tables only when they change. On a terminal it redraws the table in place
// when nothing was printed after it.
type Text struct {
	mu        sync.Mutex
	w         io.Writer
	tty       bool
	lastTable string
	// tableLines is how many lines the table printed last occupies at the
	// bottom of the screen; 0 when something else was printed after it.
	tableLines int
}

// NewText returns a Text sink writing to w. tty enables in-place redraws with
// ANSI escapes; pass false when w is a file or pipe.
func NewText(w io.Writer, tty bool) *Text {
	return &Text{w: w, tty: tty}
}

// Emit implements Sink.
func (t *Text) Emit(e Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch e.Type {
	case EventPeers:
		table := Table(e.Peers)
		if table == t.lastTable {
			return
		}
		t.lastTable = table
		var out strings.Builder
		if t.tty && t.tableLines > 0 {
			// Move up over the previous table and clear to the end of screen.
			fmt.Fprintf(&out, "\x1b[%dA\x1b[J", t.tableLines)
		}
		out.WriteString(table)
		t.tableLines = strings.Count(table, "\n")
		_, _ = io.WriteString(t.w, out.String())
		return
	case EventProgress:
		t.line("==> " + e.Message)
	case EventNotice:
		t.line("NOTE: " + e.Message)
	case EventLog:
		t.line(fmt.Sprintf("tunnel %s: %s%s", e.Level, e.Message, formatFields(e.Fields)))
	case EventError:
		t.line("error: " + e.Message)
	case EventStopped:
		t.line("==> " + e.Message)
	default:
		t.line(e.Message)
	}
}

func (t *Text) line(s string) {
	t.tableLines = 0
	_, _ = io.WriteString(t.w, s+"\n")
}

func formatFields(f map[string]string) string {
	if len(f) == 0 {
		return ""
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, " %s=%q", k, f[k])
	}
	return sb.String()
}

// JSON writes one JSON object per line per event, for scripts. Peer tables are
// deduplicated like Text's, so a line means something changed.
type JSON struct {
	mu        sync.Mutex
	enc       *json.Encoder
	lastPeers []jsonRow
	havePeers bool
}

// NewJSON returns a JSON sink writing to w.
func NewJSON(w io.Writer) *JSON {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &JSON{enc: enc}
}

// jsonEvent is the wire shape of one `--json` line.
type jsonEvent struct {
	Time    string            `json:"time"`
	Type    EventType         `json:"type"`
	Message string            `json:"message,omitempty"`
	Level   string            `json:"level,omitempty"`
	Fields  map[string]string `json:"fields,omitempty"`
	// Peers is always present (possibly empty) on a peers event.
	Peers *[]jsonRow `json:"peers,omitempty"`
}

type jsonRow struct {
	Workspace  string   `json:"workspace"`
	Agent      string   `json:"agent,omitempty"`
	Name       string   `json:"name,omitempty"`
	Addresses  []string `json:"addresses"`
	State      string   `json:"state"`
	LatencyMS  *float64 `json:"latency_ms,omitempty"`
	Path       string   `json:"path,omitempty"` // "p2p" or "derp"
	DERPRegion string   `json:"derp_region,omitempty"`
}

func toJSONRows(rows []Row) []jsonRow {
	out := make([]jsonRow, 0, len(rows))
	for _, r := range rows {
		j := jsonRow{
			Workspace: r.Workspace, Agent: r.Agent, Name: r.Name,
			Addresses: append([]string{}, r.Addresses...), State: r.State,
			DERPRegion: r.DERPRegion,
		}
		if r.Latency > 0 {
			ms := float64(r.Latency) / float64(time.Millisecond)
			j.LatencyMS = &ms
			j.Path = "derp"
			if r.P2P {
				j.Path = "p2p"
			}
		}
		out = append(out, j)
	}
	return out
}

func rowsEqual(a, b []jsonRow) bool {
	return slices.EqualFunc(a, b, func(x, y jsonRow) bool {
		return x.Workspace == y.Workspace && x.Agent == y.Agent && x.Name == y.Name &&
			slices.Equal(x.Addresses, y.Addresses) && x.State == y.State && x.Path == y.Path &&
			x.DERPRegion == y.DERPRegion &&
			((x.LatencyMS == nil) == (y.LatencyMS == nil)) &&
			(x.LatencyMS == nil || *x.LatencyMS == *y.LatencyMS)
	})
}

// Emit implements Sink.
func (j *JSON) Emit(e Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	ev := jsonEvent{
		Time:    e.Time.UTC().Format(time.RFC3339Nano),
		Type:    e.Type,
		Message: e.Message,
		Level:   e.Level,
		Fields:  e.Fields,
	}
	if e.Type == EventPeers {
		rows := toJSONRows(e.Peers)
		if j.havePeers && rowsEqual(rows, j.lastPeers) {
			return
		}
		j.lastPeers, j.havePeers = rows, true
		ev.Peers = &rows
	}
	// Encoding these plain types cannot fail; a write error (closed stdout)
	// leaves nothing useful to do but drop the event.
	_ = j.enc.Encode(ev)
}
