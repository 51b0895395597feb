// Package service is Coder Connect's system service for Linux: it owns the
// tunnel and lets ordinary users drive it over a Unix socket, the way Coder
// Desktop's service on Windows lets its app drive it over a named pipe.
//
// Clients speak the client/service leg of the CoderVPN protocol
// (speaker.NewService: ClientMessage in, ServiceMessage out, version 1.1):
// Start, Stop and StatusRequest; the service broadcasts Status (lifecycle
// and the full PeerUpdate) to every client on every change, and
// StartProgress while a Start runs.
//
// Who may talk to it: the socket is 0660 root:<group> (Listen), and every
// connection is checked again with SO_PEERCRED and SO_PEERGROUPS
// (CheckPeer): root or a member of the group. Anyone else gets one line
// naming the group and the fix, after their header was read.
//
// One goroutine (the tunnel loop) runs every operation on the tunnel in
// order; clients only queue operations and read the Status. Each client has
// a bounded queue of requests and of replies, and a coalesced Status slot;
// a client that floods, stops reading (5 s) or sends garbage is dropped
// alone. The login a client sent is kept for reconnects and written to
// disk (login.json, 0600) only when the client asked for it (persist);
// it never appears in a Status, a log line or an error.
package service
