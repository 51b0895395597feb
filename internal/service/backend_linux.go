package service

import (
	"context"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// Backend brings a tunnel up. The service does not know where the tunnel
// runs (in process, in a daemon child) nor how settings are applied: the
// command supplies that, and tests supply a fake.
type Backend interface {
	// Start creates the device, starts the tunnel and sends it req; it
	// returns once the tunnel answered. Its error is shown to clients
	// (after redaction), so it should say what to do. On error nothing may
	// be left behind.
	Start(ctx context.Context, req *vpnpb.StartRequest, ev Events) (Running, error)
}

// Events are what a running tunnel tells the service.
type Events struct {
	// PeerUpdate gets each PeerUpdate of the tunnel, in order. It must not
	// block for long.
	PeerUpdate func(*vpnpb.PeerUpdate)
}

// Running is a tunnel the Backend started.
type Running interface {
	// Stop stops the tunnel and removes everything Start set up.
	Stop(ctx context.Context) error
	// Wake tells the tunnel the machine resumed from sleep.
	Wake(ctx context.Context) error
	// Done is closed when the tunnel ended by itself.
	Done() <-chan struct{}
	// Err says why it ended.
	Err() error
}
