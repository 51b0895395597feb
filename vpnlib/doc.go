// Package vpnlib is the tunnel side of a CoderVPN session: it serves the
// manager's requests over the pipes (the protocol itself is package
// speaker), and once started it runs Coder's tailnet engine over the host's
// tunnel device, reports the user's workspaces and agents (peers), hands the
// engine's network settings to the host, forwards its logs, and on wake
// rebinds and starts new WireGuard sessions with every peer (wake_reset.go).
// The deployment's REST API and control connection are package
// internal/coderd's; the device is package tunfd's.
//
// # Goroutines
//
// A Tunnel is made by NewTunnel, which owns the pipes and starts run, the
// supervisor. Everything else is started by run or by a Start, and ended
// before run closes Done:
//
//	NewTunnel ──go──▶ run, the supervisor
//	                   ├─ speaker.NewTunnel: the handshake, then
//	                   │   readLoop (speaker's)   reads frames; onRequest
//	                   │     │                    queues each request:
//	                   │     ├─▶ control ──▶ controlLoop   Start, Stop
//	                   │     └─▶ queries ──▶ queryLoop     GetPeerUpdate, Wake,
//	                   │                                   kinds not served
//	                   ├─ logForwarder.run        Log messages to the manager
//	                   └─ waits until the speaker's session ends (hang-up,
//	                      a corrupt frame) or end is called (Stop, Close)
//
//	controlLoop: Start ──▶ startSession: reachDeployment → openDevice →
//	                       startEngine → startControllers → awaitReady →
//	                       startPinging, which leave a session running:
//	  engine (tailnet.Conn)     its own goroutines; ended by its Close
//	  tailnet.Controller        control connection: coordination, DERP map,
//	                            resume tokens, workspace updates (→ peers,
//	                            → the engine's DNS names); ended by cancel
//	  engineProxy.run           the coordinator's peer updates into the
//	                            engine, in batches; ended by cancel
//	  runPingLoop               pings agents, sends their status; cancel
//	  netSettings.sendEarly     the engine's starting settings (router, and
//	                            the DNS of its first workspace update) to the
//	                            host, beside the engine's start; ended by
//	                            shutdown
//	The engine calls back into netSettings (router, DNS), which asks the
//	host with a NetworkSettings request; peerTracker sends PeerUpdates.
//
// session.close undoes a session in two parts. halt stops it carrying
// traffic: the settings and the peer tracker stop sending, cancel ends the
// controller, the batcher and the pings (the last two waited for), then the
// engine closes (and with it the device). finish waits for the controller's
// goodbye to the coordinator and closes the REST client's idle connections.
//
// # How a session ends
//
// Stop: the read loop hands the StopRequest to the control queue (first
// aborting a Start in progress). controlLoop halts the session, waits for
// the requests that arrived with the Stop to be queued (Quiesce) and
// answers them, flushes the logs, sends the StopResponse as the last frame
// (closing our write side, so the manager reads end of file), calls end,
// and then finishes the session.
//
// Hang-up: the manager closes its pipes; the read loop sees end of file
// and the speaker's session ends. run notices and calls end.
//
// Close (coderStopVPN, a signal to the daemon): end directly.
//
// end closes ending and cancels the tunnel's context (which aborts a Start
// and stops both loops). run then logs why the session ended (locally),
// closes the speaker first (the pipes: a write blocked on a host that
// stopped reading fails at once, so nothing below waits for the write
// timeout; its read loop is waited for), closes the session if one is
// left, stops the log forwarder, waits for its loops, and closes Done.
// Close returns after Done: no goroutine, engine or fd of the tunnel is
// left.
package vpnlib
