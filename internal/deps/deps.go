// Package deps pins imports while the module is bootstrapped.
package deps

import (
	_ "github.com/coder/coder/v2/codersdk"
	_ "github.com/coder/coder/v2/codersdk/workspacesdk"
	_ "github.com/coder/coder/v2/tailnet"
	_ "github.com/coder/coder/v2/tailnet/proto"
	_ "github.com/tailscale/wireguard-go/tun"
	_ "go.uber.org/goleak"
	_ "golang.org/x/sys/unix"
	_ "google.golang.org/protobuf/proto"
	_ "gvisor.dev/gvisor/pkg/tcpip/stack"
	_ "tailscale.com/derp"
	_ "tailscale.com/derp/derphttp"
)
