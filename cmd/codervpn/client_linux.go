package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/codervpn/codervpn/internal/service"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// errNoService means nothing listens on the socket.
var errNoService = errors.New("the codervpn service is not running")

// serviceClient is a connection to the codervpn service.
type serviceClient struct {
	sp       *speaker.Client
	statuses chan *vpnpb.Status
	progress chan *vpnpb.StartProgress
}

// dialService connects to the service at sock. Every failure is one line
// that says what to do.
func dialService(ctx context.Context, sock string) (*serviceClient, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", sock)
	switch {
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%w (nothing listens on %s): start it with `sudo systemctl enable --now codervpn`, "+
			"or run `sudo codervpn up --foreground` for a tunnel in this terminal", errNoService, sock)
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("permission denied on %s: %s", sock, groupAdvice(sock))
	case err != nil:
		return nil, fmt.Errorf("connect to the codervpn service at %s: %w", sock, err)
	}
	c := &serviceClient{statuses: make(chan *vpnpb.Status, 64), progress: make(chan *vpnpb.StartProgress, 16)}
	r, w := speaker.SplitConn(conn)
	hctx, cancel := context.WithTimeout(ctx, service.HandshakeTimeout+5*time.Second)
	defer cancel()
	c.sp, err = speaker.NewClient(hctx, r, w, speaker.Options[*vpnpb.ServiceMessage]{
		OnMessage: func(m *vpnpb.ServiceMessage) {
			switch {
			case m.GetStatus() != nil:
				// Only the newest matters: drop the oldest when behind.
				for {
					select {
					case c.statuses <- m.GetStatus():
						return
					default:
						select {
						case <-c.statuses:
						default:
						}
					}
				}
			case m.GetStartProgress() != nil:
				select {
				case c.progress <- m.GetStartProgress():
				default:
				}
			}
		},
	})
	if err != nil {
		var he *speaker.HandshakeError
		if errors.As(err, &he) && strings.HasPrefix(he.Header, service.RefusalPrefix) {
			return nil, fmt.Errorf("the codervpn service refused: %s", strings.TrimPrefix(he.Header, service.RefusalPrefix))
		}
		return nil, fmt.Errorf("talk to the codervpn service at %s: %w", sock, err)
	}
	return c, nil
}

// groupAdvice names the socket's group and how to join it.
func groupAdvice(sock string) string {
	group := "codervpn"
	if st, err := os.Stat(sock); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			if g, err := user.LookupGroupId(strconv.Itoa(int(sys.Gid))); err == nil {
				group = g.Name
			}
		}
	}
	name := "$USER"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return fmt.Sprintf("you are not in group %s; an administrator can run `sudo usermod -aG %s %s` (then log in again)",
		group, group, name)
}

func (c *serviceClient) Close() { _ = c.sp.Close() }

// call sends a request and waits for its reply.
func (c *serviceClient) call(ctx context.Context, m *vpnpb.ClientMessage) (*vpnpb.ServiceMessage, error) {
	r, err := c.sp.Call(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("the codervpn service did not answer: %w", err)
	}
	return r, nil
}

func (c *serviceClient) status(ctx context.Context) (*vpnpb.Status, error) {
	r, err := c.call(ctx, &vpnpb.ClientMessage{Msg: &vpnpb.ClientMessage_Status{Status: &vpnpb.StatusRequest{}}})
	if err != nil {
		return nil, err
	}
	return r.GetStatus(), nil
}
