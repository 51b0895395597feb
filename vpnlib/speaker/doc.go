// Package speaker is the CoderVPN protocol: the handshake, the framing, the
// version negotiation and the request/reply engine, for both ends. It links
// nothing but the protocol buffers of package proto and the standard
// library, so a host (a CLI, a test, a service) can speak the protocol
// without the tunnel's network engine.
//
// # Roles
//
// A session joins two peers over a pair of byte streams (two pipes, or one
// socket). The manager is the host application: Coder Desktop, the macOS
// NetworkExtension, our CLI. It sends ManagerMessages. The tunnel runs the
// network engine and sends TunnelMessages. Manager and Tunnel are the two
// ends; NewManager and NewTunnel make them.
//
// The same engine carries a second pair: a client (codervpn up/down/status,
// Coder Desktop's app on Windows) and the service that owns the tunnel,
// exchanging ClientMessages and ServiceMessages (Start, Stop, Status and the
// broadcast StartProgress and Status). NewClient and NewService make them;
// they announce roles "client" and "service", offer ServiceVersion (1.1,
// numbered apart from the tunnel protocol) and refuse zero-length frames
// (ErrEmptyFrame), as Coder Desktop's service does.
//
// # Handshake
//
// Both sides write one line at once, and read the other's:
//
//	codervpn <role> <versions>\n
//
// role is "manager" or "tunnel" and must be the other side's; versions is
// "M.m[,M.m…]": majors ascending, none twice, none below 1 (ParseVersionList).
// A header is printable ASCII with single spaces, at most 255 bytes before
// its bare '\n'. It is read one byte at a time, so a first frame that follows
// in the same write is never consumed. A bad header is a *HandshakeError
// quoting what the peer sent. Each side writes while it reads, because with
// unbuffered pipes two peers that both write first would otherwise deadlock.
//
// # Negotiation
//
// The session speaks the highest major both sides offer, at the lower of the
// two minors offered for it: a manager offering 1.2 and a tunnel offering 1.3
// speak 1.2. No common major fails the handshake.
//
// # Frames
//
// After the header each message is a 4-byte big-endian length and that many
// bytes of a protobuf ManagerMessage or TunnelMessage. A length over
// MaxFrameSize (16 MiB) is refused before anything is allocated; a stream
// that ends inside a frame, or a payload that does not decode, ends the
// session (ErrTruncatedFrame, ErrCorruptFrame). A clean end of stream between
// frames is the peer closing the session (io.EOF), and so is a write that
// finds the peer's read side gone (EPIPE, ECONNRESET): a host that hangs up
// is seen on whichever side notices first.
//
// # RPC
//
// Every message carries an RPC header. msg_id ≠ 0 marks a request; each
// sender numbers its requests 1, 2, 3… A reply sets response_to to the
// request's msg_id. A message with neither is one-way. Who may send what:
//
//	manager → tunnel requests   Start, Stop, GetPeerUpdate, Wake (1.3)
//	tunnel → manager requests   NetworkSettings
//	tunnel → manager one-way    Log, PeerUpdate
//
// Call sends a request and waits for its reply; Reply answers a request the
// OnRequest handler got; ReplyFinal answers the last one (the StopResponse)
// and closes our write side so the peer reads a clean EOF; Send writes a
// one-way message. A reply that matches no waiting Call (its caller gave
// up, or the peer answered an id never sent) is dropped.
//
// # Version gates
//
// A speaker never sends what the negotiated version does not know:
//
//	1.1  StartRequest.device_id, device_os, coder_desktop_version (stripped below)
//	1.2  Agent.last_ping in PeerUpdates (stripped below)
//	1.3  WakeRequest and WakeResponse (refused below: ErrUnsupportedByPeer)
//
// # Ending
//
// A session ends when the peer closes its side, a frame is corrupt, a write
// fails, a frame makes no progress for the write timeout (ErrWriteTimeout:
// a half-written frame cannot be taken back), or Close is called. Done then
// closes, Err says why, and every pending Call fails with an error wrapping
// ErrClosed.
package speaker
