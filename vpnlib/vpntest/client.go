package vpntest

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sync"

	"tailscale.com/tailcfg"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"github.com/coder/quartz"
	"github.com/coder/websocket"
)

// Client is a client of the deployment assembled only from Coder's own
// client libraries (codersdk, workspacesdk's websocket dialer, the tailnet
// controllers, and tailnet.NewConn with its userspace netstack, no TUN): what
// a Coder CLI does. It is an independent peer that proves the deployment
// serves what those libraries expect, and the baseline that benchmarks
// compare a CoderVPN tunnel with.
type Client struct {
	// Conn is the client's tailnet; DialContextTCP reaches agents.
	Conn *tailnet.Conn
	// Me is what GET /api/v2/users/me returned.
	Me codersdk.User
	// ConnInfo is what GET /api/v2/workspaceagents/connection returned.
	ConnInfo workspacesdk.AgentConnectionInfo
	// Updates holds the workspace state the client was sent.
	Updates *tailnet.TunnelAllWorkspaceUpdatesController
	// Resume is the resume-token controller of the control connection.
	Resume tailnet.ResumeTokenController

	ctrl      *tailnet.Controller
	cancel    context.CancelFunc
	closeOnce sync.Once
}

// Dial connects a Client to the deployment and returns once its control
// connection is up. It asks for tunnels to every agent of the owner, as
// CoderVPN does. Close it when done.
func (d *Deployment) Dial(ctx context.Context, logger slog.Logger) (*Client, error) {
	sdk := codersdk.New(d.URL)
	sdk.SetSessionToken(d.Token)
	me, err := sdk.User(ctx, codersdk.Me)
	if err != nil {
		return nil, fmt.Errorf("get users/me: %w", err)
	}
	info, err := workspacesdk.New(sdk).AgentConnectionInfoGeneric(ctx)
	if err != nil {
		return nil, fmt.Errorf("get connection info: %w", err)
	}
	rw := clientRewriter{d}
	rw.RewriteDERPMap(info.DERPMap)
	conn, err := tailnet.NewConn(&tailnet.Options{
		Addresses:           []netip.Prefix{tailnet.CoderServicePrefix.RandomPrefix()},
		DERPMap:             info.DERPMap,
		DERPForceWebSockets: info.DERPForceWebSockets,
		BlockEndpoints:      info.DisableDirectConnections,
		Logger:              logger.Named("tailnet"),
		DNSMatchDomain:      info.HostnameSuffix,
	})
	if err != nil {
		return nil, fmt.Errorf("client tailnet: %w", err)
	}
	header := http.Header{}
	header.Set(codersdk.SessionTokenHeader, d.Token)
	dialer := workspacesdk.NewWebsocketDialer(logger.Named("dialer"), d.URL.JoinPath("/api/v2/tailnet"),
		&websocket.DialOptions{HTTPHeader: header, CompressionMode: websocket.CompressionDisabled},
		workspacesdk.WithWorkspaceUpdates(&tailnetproto.WorkspaceUpdatesRequest{
			WorkspaceOwnerId: tailnet.UUIDToByteSlice(me.ID),
		}))
	runCtx, cancel := context.WithCancel(context.Background())
	ctrl := tailnet.NewController(logger.Named("controller"), dialer)
	coordCtrl := tailnet.NewTunnelSrcCoordController(logger.Named("coord"), conn)
	ctrl.CoordCtrl = coordCtrl
	ctrl.DERPCtrl = tailnet.NewBasicDERPController(logger.Named("derp"), rw, conn)
	resume := tailnet.NewBasicResumeTokenController(logger.Named("resume"), quartz.NewReal())
	ctrl.ResumeTokenCtrl = resume
	// No WithDNS: a netstack Conn has no DNS configurator to take the hosts.
	updates := tailnet.NewTunnelAllWorkspaceUpdatesController(logger.Named("updates"), coordCtrl)
	ctrl.WorkspaceUpdatesCtrl = updates
	ctrl.Run(runCtx)
	c := &Client{Conn: conn, Me: me, ConnInfo: info, Updates: updates, Resume: resume, ctrl: ctrl, cancel: cancel}
	select {
	case err := <-dialer.Connected():
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("connect to the tailnet API: %w", err)
		}
	case <-ctx.Done():
		_ = c.Close()
		return nil, fmt.Errorf("connect to the tailnet API: %w", ctx.Err())
	}
	return c, nil
}

// Close stops the controllers and the tailnet; safe to call more than once.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.ctrl.Closed()
		err = c.Conn.Close()
	})
	return err
}

// clientRewriter points the embedded relay region at the URL the client
// reached the deployment by, as coderd clients do.
type clientRewriter struct{ d *Deployment }

func (r clientRewriter) RewriteDERPMap(m *tailcfg.DERPMap) {
	tailnet.RewriteDERPMapDefaultRelay(context.Background(), slog.Logger{}, m, r.d.URL)
}
