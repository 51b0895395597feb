package tunfd

// Open wraps fd with the framing it carries: a Linux tun (TUNGETIFF succeeds)
// gets FramingNone; anything else — in practice a socketpair end standing in
// for a macOS utun in tests — gets FramingUTun. opts.Framing is ignored.
func Open(fd int, opts Options) (*Device, error) {
	if probeIface(fd).linuxTun {
		opts.Framing = FramingNone
	} else {
		opts.Framing = FramingUTun
	}
	return New(fd, opts)
}
