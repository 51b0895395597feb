package status

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/manager"
)

var now = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

func id(b byte) []byte {
	out := make([]byte, 16)
	out[15] = b
	return out
}

func ws(i byte, name string, st vpnpb.Workspace_Status) *vpnpb.Workspace {
	return &vpnpb.Workspace{Id: id(i), Name: name, Status: st}
}

type agentOpt func(*vpnpb.Agent)

func handshake(ago time.Duration) agentOpt {
	return func(a *vpnpb.Agent) { a.LastHandshake = timestamppb.New(now.Add(-ago)) }
}

func ping(lat time.Duration, p2p bool, derp string) agentOpt {
	return func(a *vpnpb.Agent) {
		a.LastPing = &vpnpb.LastPing{Latency: durationpb.New(lat), DidP2P: p2p, PreferredDerp: derp}
	}
}

func agent(i, wsID byte, name, wsName, ip string, opts ...agentOpt) *vpnpb.Agent {
	a := &vpnpb.Agent{
		Id: id(i), WorkspaceId: id(wsID), Name: name, IpAddrs: []string{ip},
		Fqdn: []string{name + "." + wsName + ".me.coder.", wsName + ".coder."},
	}
	for _, o := range opts {
		o(a)
	}
	return a
}

func TestTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		updates []*vpnpb.PeerUpdate
		want    string
	}{
		{
			name: "empty",
			want: "No workspaces yet.\n",
		},
		{
			name: "connecting, connected over P2P and DERP, stale, stopped",
			updates: []*vpnpb.PeerUpdate{{
				UpsertedWorkspaces: []*vpnpb.Workspace{
					ws(1, "dev", vpnpb.Workspace_RUNNING),
					ws(2, "build", vpnpb.Workspace_RUNNING),
					ws(3, "old", vpnpb.Workspace_STOPPED),
				},
				UpsertedAgents: []*vpnpb.Agent{
					agent(10, 1, "main", "dev", "fd60:627a:a42b:1::1", handshake(time.Minute), ping(12400*time.Microsecond, true, "")),
					agent(11, 1, "sidecar", "dev", "fd60:627a:a42b:1::2", handshake(10*time.Minute), ping(2300*time.Microsecond, false, "Frankfurt"),
						func(a *vpnpb.Agent) { a.Fqdn = a.Fqdn[:1] }), // a second agent has no short name
					agent(12, 2, "main", "build", "fd60:627a:a42b:2::1"),
				},
			}},
			want: "" +
				"WORKSPACE  AGENT    NAME                  ADDRESS              STATE                LATENCY  PATH\n" +
				"build      main     build.coder           fd60:627a:a42b:2::1  connecting           -        -\n" +
				"dev        main     dev.coder             fd60:627a:a42b:1::1  connected            12ms     P2P\n" +
				"dev        sidecar  sidecar.dev.me.coder  fd60:627a:a42b:1::2  no recent handshake  2.3ms    DERP (Frankfurt)\n" +
				"old        -        -                     -                    stopped              -        -\n",
		},
		{
			name: "deleted agent and workspace disappear, re-upsert replaces",
			updates: []*vpnpb.PeerUpdate{
				{
					UpsertedWorkspaces: []*vpnpb.Workspace{ws(1, "dev", vpnpb.Workspace_RUNNING), ws(2, "gone", vpnpb.Workspace_RUNNING)},
					UpsertedAgents: []*vpnpb.Agent{
						agent(10, 1, "main", "dev", "fd60::1"),
						agent(11, 2, "main", "gone", "fd60::2"),
					},
				},
				{
					DeletedWorkspaces: []*vpnpb.Workspace{ws(2, "gone", vpnpb.Workspace_RUNNING)},
					DeletedAgents:     []*vpnpb.Agent{agent(11, 2, "main", "gone", "fd60::2")},
					UpsertedAgents:    []*vpnpb.Agent{agent(10, 1, "main", "dev", "fd60::1", handshake(time.Second), ping(1500*time.Millisecond, false, ""))},
				},
			},
			want: "" +
				"WORKSPACE  AGENT  NAME       ADDRESS  STATE      LATENCY  PATH\n" +
				"dev        main   dev.coder  fd60::1  connected  1.5s     DERP\n",
		},
		{
			name: "agent of a starting workspace shows the workspace status",
			updates: []*vpnpb.PeerUpdate{{
				UpsertedWorkspaces: []*vpnpb.Workspace{ws(1, "dev", vpnpb.Workspace_STARTING)},
				UpsertedAgents:     []*vpnpb.Agent{agent(10, 1, "main", "dev", "fd60::1")},
			}},
			want: "" +
				"WORKSPACE  AGENT  NAME       ADDRESS  STATE     LATENCY  PATH\n" +
				"dev        main   dev.coder  fd60::1  starting  -        -\n",
		},
		{
			name: "agent before its workspace is named by id",
			updates: []*vpnpb.PeerUpdate{{
				UpsertedAgents: []*vpnpb.Agent{agent(10, 7, "main", "dev", "fd60::1")},
			}},
			want: "" +
				"WORKSPACE                                         AGENT  NAME       ADDRESS  STATE       LATENCY  PATH\n" +
				"(workspace 00000000-0000-0000-0000-000000000007)  main   dev.coder  fd60::1  connecting  -        -\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := manager.NewPeers(tc.updates...)
			if err != nil {
				t.Fatal(err)
			}
			if got := Table(Rows(p, now)); got != tc.want {
				t.Errorf("table mismatch\n got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestHandshakeStaleBoundary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ago  time.Duration
		want State
	}{
		{"just now", 0, StateConnected},
		{"exactly stale", HandshakeStale, StateConnected},
		{"one second past", HandshakeStale + time.Second, StateNoRecentHandshake},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := manager.NewPeers(&vpnpb.PeerUpdate{UpsertedAgents: []*vpnpb.Agent{agent(1, 2, "a", "w", "fd60::1", handshake(tc.ago))}})
			if err != nil {
				t.Fatal(err)
			}
			if got := Rows(p, now)[0].State; got != string(tc.want) {
				t.Errorf("state = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTextSink(t *testing.T) {
	t.Parallel()
	rows := []Row{{Workspace: "dev", Agent: "main", Name: "dev.coder", Addresses: []string{"fd60::1"}, State: "connected"}}
	changed := []Row{{Workspace: "dev", Agent: "main", Name: "dev.coder", Addresses: []string{"fd60::1"}, State: "no recent handshake"}}
	tests := []struct {
		name   string
		tty    bool
		events []Event
		want   string
	}{
		{
			name: "pipe: unchanged table is not reprinted",
			events: []Event{
				{Type: EventProgress, Message: "connecting to https://coder.example"},
				{Type: EventPeers, Peers: rows},
				{Type: EventPeers, Peers: rows},
				{Type: EventLog, Level: "warn", Message: "slow", Fields: map[string]string{"b": "2", "a": "x y"}},
				{Type: EventNotice, Message: "DNS is not configured"},
				{Type: EventStopped, Message: "stopped"},
			},
			want: "==> connecting to https://coder.example\n" + Table(rows) +
				"tunnel warn: slow a=\"x y\" b=\"2\"\nNOTE: DNS is not configured\n==> stopped\n",
		},
		{
			name:   "tty: changed table redraws in place",
			tty:    true,
			events: []Event{{Type: EventPeers, Peers: rows}, {Type: EventPeers, Peers: changed}},
			want:   Table(rows) + "\x1b[2A\x1b[J" + Table(changed),
		},
		{
			name: "tty: no redraw over a line printed after the table",
			tty:  true,
			events: []Event{
				{Type: EventPeers, Peers: rows},
				{Type: EventError, Message: "boom"},
				{Type: EventPeers, Peers: changed},
			},
			want: Table(rows) + "error: boom\n" + Table(changed),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			s := NewText(&buf, tc.tty)
			for _, e := range tc.events {
				s.Emit(e)
			}
			if buf.String() != tc.want {
				t.Errorf("output mismatch\n got: %q\nwant: %q", buf.String(), tc.want)
			}
		})
	}
}

func TestJSONSink(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	rows := []Row{{
		Workspace: "dev", Agent: "main", Name: "dev.coder", Addresses: []string{"fd60::1"},
		State: "connected", Latency: 12500 * time.Microsecond, DERPRegion: "Frankfurt",
	}}
	var buf bytes.Buffer
	s := NewJSON(&buf)
	s.Emit(Event{Time: at, Type: EventProgress, Message: "connecting"})
	s.Emit(Event{Time: at, Type: EventPeers})
	s.Emit(Event{Time: at, Type: EventPeers, Peers: rows})
	s.Emit(Event{Time: at, Type: EventPeers, Peers: rows}) // unchanged: no line
	s.Emit(Event{Time: at, Type: EventLog, Level: "info", Message: "hi", Fields: map[string]string{"k": "v"}})
	s.Emit(Event{Time: at, Type: EventStopped, Message: "stopped"})

	want := strings.Join([]string{
		`{"time":"2026-01-02T02:04:05.0000006Z","type":"progress","message":"connecting"}`,
		`{"time":"2026-01-02T02:04:05.0000006Z","type":"peers","peers":[]}`,
		`{"time":"2026-01-02T02:04:05.0000006Z","type":"peers","peers":[{"workspace":"dev","agent":"main","name":"dev.coder","addresses":["fd60::1"],"state":"connected","latency_ms":12.5,"path":"derp","derp_region":"Frankfurt"}]}`,
		`{"time":"2026-01-02T02:04:05.0000006Z","type":"log","message":"hi","level":"info","fields":{"k":"v"}}`,
		`{"time":"2026-01-02T02:04:05.0000006Z","type":"stopped","message":"stopped"}`,
	}, "\n") + "\n"
	if buf.String() != want {
		t.Fatalf("json mismatch\n got:\n%s\nwant:\n%s", buf.String(), want)
	}
	// Every line is a standalone JSON object a script can decode.
	for i, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("line %d is not JSON: %v", i, err)
		}
	}
}

func TestFormatLatency(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, ""},
		{-time.Millisecond, ""},
		{800 * time.Microsecond, "0.8ms"},
		{9940 * time.Microsecond, "9.9ms"},
		{10 * time.Millisecond, "10ms"},
		{999 * time.Millisecond, "999ms"},
		{1500 * time.Millisecond, "1.5s"},
	}
	for _, tc := range tests {
		t.Run(tc.in.String(), func(t *testing.T) {
			t.Parallel()
			if got := FormatLatency(tc.in); got != tc.want {
				t.Errorf("FormatLatency(%v) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
