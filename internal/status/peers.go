// Package status turns the tunnel's PeerUpdate stream into what a person (or a
// script) reads while `codervpn up` runs: a table of workspaces and agents, or
// one JSON event per line.
//
// The tunnel sends a full snapshot once and then only changes, so the manager
// has to keep the picture itself; Peers does that. Rendering is separate
// (Table, Sink) so that the same picture can be printed for people and for
// machines, and so that tests can check the text without a running tunnel.
package status

import (
	"sort"
	"strings"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// HandshakeStale is how old a WireGuard handshake may be before an agent is
// shown as "no recent handshake". WireGuard renews a live session's keys
// every two minutes, so a handshake older than five means packets are not
// getting through (Coder Desktop uses the same threshold).
const HandshakeStale = 5 * time.Minute

// State is the one-word condition of a row, in the words Coder Desktop uses.
type State string

const (
	// StateConnecting: the agent is known but no handshake has completed yet.
	StateConnecting State = "connecting"
	// StateConnected: a handshake completed within HandshakeStale.
	StateConnected State = "connected"
	// StateNoRecentHandshake: the last handshake is older than HandshakeStale.
	StateNoRecentHandshake State = "no recent handshake"
)

// Row is one line of the status table: an agent, or a workspace that has no
// agent (for example because it is stopped). The JSON names are part of the
// `--json` output contract.
type Row struct {
	Workspace string `json:"workspace"`
	// Agent is empty for a workspace without agents.
	Agent string `json:"agent,omitempty"`
	// Name is the agent's shortest DNS name, without the trailing dot.
	Name      string   `json:"name,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	// State is a State for agents of running workspaces; otherwise the
	// workspace's status in lower case ("stopped", "starting", ...).
	State string `json:"state"`
	// Latency is the last successful ping's round trip; zero when unknown.
	Latency time.Duration `json:"-"`
	// P2P is true when the last ping went direct; only meaningful with Latency.
	P2P bool `json:"-"`
	// DERPRegion names the preferred DERP region reported with the last ping.
	DERPRegion string `json:"derp_region,omitempty"`
}

// Path is how traffic reaches the agent in the words of the table: "P2P",
// "DERP (region)", or "" while no ping has succeeded.
func (r Row) Path() string {
	switch {
	case r.Latency == 0:
		return ""
	case r.P2P:
		return "P2P"
	case r.DERPRegion != "":
		return "DERP (" + r.DERPRegion + ")"
	default:
		return "DERP"
	}
}

// Peers accumulates PeerUpdates into the current set of workspaces and agents.
// It is not safe for concurrent use; the caller serialises Apply and Rows.
type Peers struct {
	workspaces map[string]*vpnpb.Workspace
	agents     map[string]*vpnpb.Agent
}

// NewPeers returns an empty picture.
func NewPeers() *Peers {
	return &Peers{
		workspaces: make(map[string]*vpnpb.Workspace),
		agents:     make(map[string]*vpnpb.Agent),
	}
}

// Apply merges one PeerUpdate: deletions first, then upserts, so that an
// update that deletes and re-adds the same id (a rebuilt agent) keeps it.
func (p *Peers) Apply(u *vpnpb.PeerUpdate) {
	for _, w := range u.GetDeletedWorkspaces() {
		delete(p.workspaces, string(w.GetId()))
	}
	for _, a := range u.GetDeletedAgents() {
		delete(p.agents, string(a.GetId()))
	}
	for _, w := range u.GetUpsertedWorkspaces() {
		p.workspaces[string(w.GetId())] = w
	}
	for _, a := range u.GetUpsertedAgents() {
		p.agents[string(a.GetId())] = a
	}
}

// Reset forgets everything, for when a full snapshot replaces the picture.
func (p *Peers) Reset() {
	clear(p.workspaces)
	clear(p.agents)
}

// Rows returns the table's rows as of now, sorted by workspace then agent name.
// An agent whose workspace the tunnel has not (yet) reported is still shown,
// under its workspace id, rather than silently dropped.
func (p *Peers) Rows(now time.Time) []Row {
	rows := make([]Row, 0, len(p.agents)+len(p.workspaces))
	withAgents := make(map[string]bool, len(p.workspaces))
	for _, a := range p.agents {
		wsID := string(a.GetWorkspaceId())
		withAgents[wsID] = true
		ws := p.workspaces[wsID]
		r := Row{
			Workspace: workspaceName(ws, a.GetWorkspaceId()),
			Agent:     a.GetName(),
			Name:      shortestName(a.GetFqdn()),
			Addresses: append([]string(nil), a.GetIpAddrs()...),
			State:     string(agentState(a, now)),
		}
		if ws != nil && ws.GetStatus() != vpnpb.Workspace_RUNNING && ws.GetStatus() != vpnpb.Workspace_UNKNOWN {
			r.State = workspaceStatus(ws)
		}
		if lp := a.GetLastPing(); lp != nil && lp.GetLatency() != nil {
			r.Latency = lp.GetLatency().AsDuration()
			r.P2P = lp.GetDidP2P()
			r.DERPRegion = lp.GetPreferredDerp()
		}
		rows = append(rows, r)
	}
	for id, ws := range p.workspaces {
		if withAgents[id] {
			continue
		}
		rows = append(rows, Row{Workspace: ws.GetName(), State: workspaceStatus(ws)})
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Workspace != rows[j].Workspace {
			return rows[i].Workspace < rows[j].Workspace
		}
		return rows[i].Agent < rows[j].Agent
	})
	return rows
}

func agentState(a *vpnpb.Agent, now time.Time) State {
	hs := a.GetLastHandshake()
	if hs == nil || hs.AsTime().IsZero() || hs.AsTime().Unix() <= 0 {
		return StateConnecting
	}
	if now.Sub(hs.AsTime()) > HandshakeStale {
		return StateNoRecentHandshake
	}
	return StateConnected
}

func workspaceStatus(ws *vpnpb.Workspace) string {
	return strings.ToLower(ws.GetStatus().String())
}

func workspaceName(ws *vpnpb.Workspace, id []byte) string {
	if ws != nil && ws.GetName() != "" {
		return ws.GetName()
	}
	return "(workspace " + formatUUID(id) + ")"
}

// shortestName picks the name a person would type: the shortest FQDN, without
// the trailing dot the tunnel sends.
func shortestName(fqdns []string) string {
	best := ""
	for _, f := range fqdns {
		f = strings.TrimSuffix(f, ".")
		if f != "" && (best == "" || len(f) < len(best) || (len(f) == len(best) && f < best)) {
			best = f
		}
	}
	return best
}

func formatUUID(b []byte) string {
	const hexdigits = "0123456789abcdef"
	if len(b) != 16 {
		var sb strings.Builder
		for _, c := range b {
			sb.WriteByte(hexdigits[c>>4])
			sb.WriteByte(hexdigits[c&0xf])
		}
		return sb.String()
	}
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexdigits[c>>4], hexdigits[c&0xf])
	}
	return string(out)
}
