// Package status turns the tunnel's PeerUpdate stream into what a person (or a
// script) reads while `codervpn up` runs: a table of workspaces and agents, or
// one JSON event per line.
//
// The tunnel sends a full snapshot once and then only changes, so the manager
// has to keep the picture itself; manager.Peers does that, and Rows reads
// the table's lines from it. Rendering is separate (Table, Sink) so that the
// same picture can be printed for people and for machines, and so that
// tests can check the text without a running tunnel.
package status

import (
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/manager"
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

// Rows returns the table's rows for p as of now, sorted by workspace then
// agent name. An agent whose workspace the tunnel has not (yet) reported is
// still shown, under its workspace id, rather than silently dropped.
func Rows(p *manager.Peers, now time.Time) []Row {
	rows := make([]Row, 0, len(p.Agents)+len(p.Workspaces))
	withAgents := make(map[uuid.UUID]bool, len(p.Workspaces))
	for _, a := range p.Agents {
		wsID := uuid.UUID(a.GetWorkspaceId()) // Peers holds only 16-byte ids
		withAgents[wsID] = true
		ws := p.Workspaces[wsID]
		r := Row{
			Workspace: workspaceName(ws, wsID),
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
	for id, ws := range p.Workspaces {
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

func workspaceName(ws *vpnpb.Workspace, id uuid.UUID) string {
	if ws != nil && ws.GetName() != "" {
		return ws.GetName()
	}
	return "(workspace " + id.String() + ")"
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
