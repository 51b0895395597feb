package vpntest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"

	"github.com/google/uuid"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"github.com/coder/websocket"
)

// controlConns tracks the open /api/v2/tailnet websockets so tests can cut
// them (DropControlConnections) and Close can end them.
type controlConns struct {
	mu     sync.Mutex
	closed bool
	next   int64
	total  int
	conns  map[int64]*websocket.Conn
}

// add registers c; it returns false when the deployment is closing, in which
// case the caller must hang up.
func (cc *controlConns) add(c *websocket.Conn) (int64, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed {
		return 0, false
	}
	if cc.conns == nil {
		cc.conns = map[int64]*websocket.Conn{}
	}
	cc.next++
	cc.total++
	cc.conns[cc.next] = c
	return cc.next, true
}

func (cc *controlConns) remove(id int64) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	delete(cc.conns, id)
}

// drop forgets every open connection and closes it; it returns how many.
func (cc *controlConns) drop() int {
	cc.mu.Lock()
	conns := cc.conns
	cc.conns = nil
	cc.mu.Unlock()
	for _, c := range conns {
		_ = c.CloseNow()
	}
	return len(conns)
}

func (cc *controlConns) closeAll() {
	cc.mu.Lock()
	cc.closed = true
	cc.mu.Unlock()
	cc.drop()
}

// DropControlConnections closes every open /api/v2/tailnet connection at
// once, as a coderd restart or a network cut would; clients must reconnect.
// It returns how many connections it closed. Once it returns,
// ControlConnections no longer counts them.
func (d *Deployment) DropControlConnections() int { return d.control.drop() }

// ControlConnections is the number of /api/v2/tailnet connections open now.
func (d *Deployment) ControlConnections() int {
	d.control.mu.Lock()
	defer d.control.mu.Unlock()
	return len(d.control.conns)
}

// TotalControlConnections is how many /api/v2/tailnet connections the
// deployment has accepted since it started; a reconnect increments it.
func (d *Deployment) TotalControlConnections() int {
	d.control.mu.Lock()
	defer d.control.mu.Unlock()
	return d.control.total
}

// handleTailnet serves the dRPC Tailnet API over a binary websocket, like
// coderd's /api/v2/tailnet: version check, optional resume token, then
// tailnet.ClientService with the user's tunnel authorization.
func (d *Deployment) handleTailnet(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	version := r.URL.Query().Get("version")
	if version == "" {
		version = "2.0"
	}
	if err := tailnetproto.CurrentVersion.Validate(version); err != nil {
		writeJSON(w, http.StatusBadRequest, codersdk.Response{
			Message:     "Unknown or unsupported API version",
			Validations: []codersdk.ValidationError{{Field: "version", Detail: err.Error()}},
		})
		return
	}

	peerID := uuid.New()
	if tok := r.URL.Query().Get("resume_token"); tok != "" {
		id, err := d.resumeToken.VerifyResumeToken(ctx, tok)
		if err != nil {
			writeJSON(w, http.StatusUnauthorized, codersdk.Response{
				Message: workspacesdk.CoordinateAPIInvalidResumeToken,
				Detail:  err.Error(),
				Validations: []codersdk.ValidationError{
					{Field: "resume_token", Detail: workspacesdk.CoordinateAPIInvalidResumeToken},
				},
			})
			return
		}
		peerID = id
	}

	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		// Accept has already written an error response.
		d.logger.Debug(ctx, "accept tailnet websocket", slog.Error(err))
		return
	}
	id, ok := d.control.add(ws)
	if !ok {
		_ = ws.Close(websocket.StatusGoingAway, "deployment is shutting down")
		return
	}
	defer d.control.remove(id)

	ctx, nc := codersdk.WebsocketNetConn(ctx, ws, websocket.MessageBinary)
	defer nc.Close()
	defer ws.CloseNow()

	err = d.service.ServeClient(ctx, version, nc, tailnet.StreamID{
		Name: "client",
		ID:   peerID,
		Auth: tailnet.ClientUserCoordinateeAuth{Auth: tunnelAuth{d.state}},
	})
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, context.Canceled) {
		d.logger.Debug(ctx, "tailnet client session ended", slog.Error(err))
		_ = ws.Close(websocket.StatusInternalError, err.Error())
	}
}

// tunnelAuth lets the owner open tunnels to any agent the deployment lists,
// and to nothing else.
type tunnelAuth struct{ s *state }

func (a tunnelAuth) AuthorizeTunnel(_ context.Context, agentID uuid.UUID) error {
	if !a.s.hasAgent(agentID) {
		return errors.New("workspace agent not found")
	}
	return nil
}
