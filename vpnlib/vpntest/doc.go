// Package vpntest runs an embedded Coder deployment for tests and the demo,
// the way net/http/httptest runs an HTTP server: everything a CoderVPN
// tunnel talks to, on 127.0.0.1, started in milliseconds, with workspaces
// and agents a test adds and removes at run time.
//
// It is built from Coder's own server-side parts rather than imitations, so
// a tunnel that works against it speaks what coderd speaks:
//
//   - tailnet.NewCoordinator, the in-memory coordinator coderd uses;
//   - tailnet.NewClientService serving the dRPC Tailnet API (Coordinate,
//     StreamDERPMaps, WorkspaceUpdates, RefreshResumeToken, PostTelemetry)
//     over a binary websocket at GET /api/v2/tailnet?version=2.x, with
//     coderd's resume-token handling and tunnel authorization;
//   - a DERP relay (tailscale.com/derp) at GET /derp, over "Upgrade: derp"
//     and websockets (tailnet.WithWebsocketSupport), plus
//     GET /derp/latency-check; the DERP map has one embedded-relay region
//     (id 999) pointing at the deployment's own listener, no STUN;
//   - GET /api/v2/users/me (codersdk.User) and
//     GET /api/v2/workspaceagents/connection (workspacesdk.AgentConnectionInfo).
//
// Every /api/v2 endpoint requires Deployment.Token in the Coder-Session-Token
// header (cookies, query parameters and bearer tokens are not accepted, so a
// test proves the client uses the header); otherwise it answers 401 with a
// codersdk.Response body, as coderd does. Requests records every request's
// method, path, query and headers.
//
// # Agents
//
// Each agent is a real tailnet.Conn (userspace netstack) that coordinates as
// an agent (tailnet.NewAgentCoordinationController) and advertises the
// addresses a Coder agent does: CoderServicePrefix.AddrFromUUID(id) in
// fd60:627a:a42b::/48 (Agent.Addr, what CoderVPN clients use) and the legacy
// TailscaleServicePrefix one. It honours Options.BlockDirect and
// Options.DERPForceWebSockets like a client would. On its tailnet address it
// serves:
//
//   - port 80 (AgentHTTPPort), HTTP: GET / answers a text page
//     "hello from agent <name> (id <id>, workspace <workspace id>)";
//     GET /bytes?n=N answers N bytes (a..z repeating).
//   - port 9 (AgentSinkPort), sink: reads and discards everything until the
//     client half-closes (or closes) its side, then writes the number of
//     bytes it received as a big-endian uint64 and closes.
//   - port 19 (AgentSourcePort), source: the client writes 8 bytes, a
//     big-endian uint64 N (at most MaxSourceBytes); the agent writes N bytes
//     (a..z repeating) and closes.
//
// Like any tailnet engine, an agent's WireGuard UDP socket binds the wildcard
// address (tailnet.Options has no way to restrict it); the deployment's own
// HTTP, DERP and coordination endpoints listen on 127.0.0.1 only, or on
// Options.ListenAddr.
//
// # Workspace updates
//
// The first message on each WorkspaceUpdates stream is a snapshot of the
// owner's workspaces and agents; then every change (AddWorkspace,
// SetWorkspaceStatus, RenameWorkspace, RemoveWorkspace, AddAgent,
// RemoveAgent) is one diff, delivered to every subscriber in order. Removing
// a workspace deletes its agents in the same update.
package vpntest
