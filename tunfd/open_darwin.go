package tunfd

// Open wraps fd with utun framing, the only framing a Darwin tunnel fd (a
// utun kernel-control socket) carries. opts.Framing is ignored.
func Open(fd int, opts Options) (*Device, error) {
	opts.Framing = FramingUTun
	return New(fd, opts)
}
