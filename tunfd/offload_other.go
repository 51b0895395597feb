//go:build unix && !linux

package tunfd

import "github.com/tailscale/wireguard-go/tun"

// OpenDevice opens fd as the device the engine reads and writes: Open's
// Device. Only Linux has a TUN whose offloads the engine's device uses.
func OpenDevice(fd int, opts Options) (tun.Device, error) { return Open(fd, opts) }
