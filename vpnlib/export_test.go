package vpnlib

// EnginePeers reports how many WireGuard peers the running session's engine
// has, or -1 when no session runs. For tests that must know when the
// coordinator's nodes have all reached the engine.
func (t *Tunnel) EnginePeers() int {
	t.mu.Lock()
	sess := t.session
	t.mu.Unlock()
	if sess == nil {
		return -1
	}
	return len(sess.conn.Status().Peer)
}
