// Package coderd is the tunnel's client of a Coder deployment: the REST
// calls a Start needs (who the token belongs to, the DERP map and the
// connection policy), the dialer of the control connection (the tailnet
// dRPC API over a websocket) and its health, the DERP map rewriting that
// points the embedded relay at the URL we used, and the sentences a user
// reads when any of it fails ("the deployment rejected the API token
// (401)…", "TLS error talking to …").
//
// Every request carries the session's headers exactly once (the session
// token, the manager's custom headers, the desktop telemetry), redirects
// are refused rather than followed (Coder never redirects its API, and
// following one could hand the token to another host), and errors never
// quote credentials from the URL.
package coderd
