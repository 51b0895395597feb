package linuxnet

// Index is the interface index, as the resolver and routes know it.
func (c *Configurator) Index() int { return c.ifindex }
