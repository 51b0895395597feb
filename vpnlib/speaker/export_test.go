package speaker

// DroppedReplies counts replies that matched no waiting Call: the Call had
// given up (context done) before the reply came, or the peer answered an id
// we never sent. Such replies are discarded, never handed to another caller.
func (s *Speaker[S, R]) DroppedReplies() uint64 { return s.dropped.Load() }
