package abi

// Len is the number of tunnels registered now, stopped or not.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tunnels)
}
