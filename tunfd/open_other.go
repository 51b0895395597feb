//go:build unix && !linux && !darwin

package tunfd

// Open wraps fd with utun framing (the BSDs' tun devices are not supported;
// this lets tests run over a socketpair). opts.Framing is ignored.
func Open(fd int, opts Options) (*Device, error) {
	opts.Framing = FramingUTun
	return New(fd, opts)
}
