package coderd

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync"

	"github.com/google/uuid"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"github.com/coder/websocket"
)

// tailnetPath is the deployment's control endpoint: the tailnet dRPC API
// over a websocket (coordination, DERP map, workspace updates).
const tailnetPath = "/api/v2/tailnet"

// ControlDialer dials the deployment's control connection for Coder's
// tailnet.Controller (it is a tailnet.ControlProtocolDialer), and learns the
// outcome of the first dial, which decides a Start: success, a refusal that
// retrying cannot fix (401, 403, 404...), or, at the deadline, the last
// error (First, LastError). Every later dial's outcome goes to its health
// logger, once per change of condition.
type ControlDialer struct {
	inner  *workspacesdk.WebsocketDialer
	base   *url.URL
	first  chan error // receives the decisive first outcome, once
	health *controlHealth
	// routes and routeLog: a failed dial checks whether the route to the
	// deployment moved to another device, and warns there if it did.
	routes   *routeWatch
	routeLog slog.Logger

	once    sync.Once
	mu      sync.Mutex
	lastErr error
}

// ControlDialer returns the dialer of the control connection for the user
// owner, whose workspace updates it subscribes to. The websocket goes
// through the client's transport, so it carries the client's headers once
// each and refuses redirects. logger is the controller's; health gets the
// connection's condition changes (lost, unreachable, back).
func (c *Client) ControlDialer(owner uuid.UUID, logger, health slog.Logger) *ControlDialer {
	inner := workspacesdk.NewWebsocketDialer(logger, c.base.JoinPath(tailnetPath),
		&websocket.DialOptions{
			HTTPClient:      c.ws,
			CompressionMode: websocket.CompressionDisabled,
		},
		workspacesdk.WithWorkspaceUpdates(&tailnetproto.WorkspaceUpdatesRequest{
			WorkspaceOwnerId: tailnet.UUIDToByteSlice(owner),
		}))
	return &ControlDialer{inner: inner, base: c.base, first: make(chan error, 1), health: newControlHealth(health), routes: c.routes, routeLog: health}
}

// Dial implements tailnet.ControlProtocolDialer.
func (d *ControlDialer) Dial(ctx context.Context, r tailnet.ResumeTokenController) (tailnet.ControlProtocolClients, error) {
	d.health.dialing(ctx)
	clients, err := d.inner.Dial(ctx, r)
	// The inner dialer reports its first permanent failure on a channel of
	// one slot and would block forever on a second: empty it every time.
	select {
	case <-d.inner.Connected():
	default:
	}
	if err == nil {
		d.report(nil)
		d.health.dialed(ctx, nil)
		return clients, nil
	}
	described := describeDialError(d.base, err)
	d.health.dialed(ctx, described)
	if ctx.Err() == nil {
		d.routes.check(ctx, d.routeLog, dialFailed)
	}
	d.mu.Lock()
	d.lastErr = described
	d.mu.Unlock()
	var sdkErr *codersdk.Error
	var redirect *redirectError
	switch {
	case errors.As(err, &sdkErr):
		switch sdkErr.StatusCode() {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusConflict:
			d.report(described)
		}
	case errors.As(err, &redirect):
		// Coder never redirects its API, and we never follow: retrying
		// cannot help.
		d.report(described)
	}
	return clients, err
}

// First receives the decisive outcome of the first dials, once: nil when a
// dial succeeded, or a refusal that retrying cannot fix.
func (d *ControlDialer) First() <-chan error { return d.first }

// LastError is the latest failed dial, described for the user; nil if
// none failed.
func (d *ControlDialer) LastError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastErr
}

func (d *ControlDialer) report(err error) {
	d.once.Do(func() { d.first <- err })
}

// describeDialError names a failed control-connection dial.
func describeDialError(base *url.URL, err error) error {
	var sdkErr *codersdk.Error
	if errors.As(err, &sdkErr) {
		body, _ := json.Marshal(sdkErr.Response)
		return describeStatus(base, tailnetPath, sdkErr.StatusCode(), body)
	}
	var redirect *redirectError
	if errors.As(err, &redirect) {
		return describeStatus(base, tailnetPath, redirect.status, nil)
	}
	return describeTransportError(base, err)
}
