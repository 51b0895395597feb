package coderd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
)

// maxResponseBytes bounds what we read from one REST response. A DERP map of a
// large deployment is a few hundred KiB; anything bigger is not a Coder reply.
const maxResponseBytes = 8 << 20

// Client is the small REST client the tunnel needs before it can start the
// engine: who the token belongs to, and how to reach the deployment's
// relays; it also dials the control connection (ControlDialer). It is our
// own rather than codersdk.Client so that every header is sent exactly once
// and every failure becomes a message a user can act on.
type Client struct {
	base      *url.URL
	transport *http.Transport
	// routes remembers how the deployment was last reached, to name a
	// route that another VPN took (ControlDialer warns).
	routes *routeWatch
	http   *http.Client
	// ws is http for the control websocket: a redirect fails the dial with
	// a redirectError, since the websocket library turns the 3xx answer we
	// would otherwise get into an error without the status.
	ws *http.Client
	// header is applied to every request, websocket upgrades included, by
	// headerTransport. It holds the session token, the manager's custom
	// headers and the desktop telemetry header.
	header http.Header
}

// NewClient builds a client for base that sends header (the session token,
// custom headers, telemetry) on every request. Its transport is private to
// the session so that CloseIdle releases every connection (and its
// goroutines) when the session ends.
func NewClient(base *url.URL, header http.Header, tlsConfig *tls.Config) *Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if tlsConfig != nil {
		transport.TLSClientConfig = tlsConfig.Clone()
	}
	transport.ResponseHeaderTimeout = 0 // the caller's context bounds each request
	routes := newRouteWatch()
	dial := transport.DialContext
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			routes.connected(c.RemoteAddr())
		}
		return c, err
	}
	rt := &headerTransport{header: header, next: transport}
	return &Client{
		base:      base,
		routes:    routes,
		transport: transport,
		header:    header,
		http: &http.Client{
			Transport: rt,
			// Coder never redirects its API; following a redirect to another
			// host would hand it our token.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		ws: &http.Client{
			Transport: rt,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				re := &redirectError{path: via[0].URL.Path}
				if req.Response != nil {
					re.status = req.Response.StatusCode
				}
				return re
			},
		},
	}
}

// redirectError is a redirect we refused to follow.
type redirectError struct {
	path   string
	status int
}

func (e *redirectError) Error() string {
	return fmt.Sprintf("%s was redirected (%d)", e.path, e.status)
}

// CloseIdle drops the client's idle connections.
func (c *Client) CloseIdle() { c.transport.CloseIdleConnections() }

// Me fetches the user the token belongs to.
func (c *Client) Me(ctx context.Context) (codersdk.User, error) {
	var u codersdk.User
	err := c.getJSON(ctx, "/api/v2/users/me", &u)
	if err == nil && u.Username == "" {
		err = fmt.Errorf("%s is not a Coder deployment (/api/v2/users/me returned no username)", displayURL(c.base))
	}
	return u, err
}

// ConnectionInfo fetches the DERP map and the connection policy.
func (c *Client) ConnectionInfo(ctx context.Context) (workspacesdk.AgentConnectionInfo, error) {
	var info workspacesdk.AgentConnectionInfo
	err := c.getJSON(ctx, "/api/v2/workspaceagents/connection", &info)
	if err == nil && (info.DERPMap == nil || len(info.DERPMap.Regions) == 0) {
		err = fmt.Errorf("%s returned no DERP relays on /api/v2/workspaceagents/connection; ask the deployment's administrator to enable DERP", displayURL(c.base))
	}
	return info, err
}

func (c *Client) getJSON(ctx context.Context, path string, out any) error {
	u := c.base.JoinPath(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("build request for %s: %w", path, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return describeTransportError(c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("read %s from %s: %w", path, displayURL(c.base), describeTransportError(c.base, err))
	}
	if resp.StatusCode != http.StatusOK {
		return describeStatus(c.base, path, resp.StatusCode, body)
	}
	if len(body) > maxResponseBytes {
		return fmt.Errorf("%s is not a Coder deployment (%s answered more than %d MiB)", displayURL(c.base), path, maxResponseBytes>>20)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s is not a Coder deployment (%s did not answer JSON: %v)", displayURL(c.base), path, err)
	}
	return nil
}

// describeStatus turns a non-200 answer into a sentence naming what to fix.
func describeStatus(base *url.URL, path string, status int, body []byte) error {
	detail := ""
	var r codersdk.Response
	if json.Unmarshal(body, &r) == nil && r.Message != "" {
		detail = ": " + trimForMessage(r.Message)
		if r.Detail != "" {
			detail += " (" + trimForMessage(r.Detail) + ")"
		}
	}
	switch status {
	case http.StatusUnauthorized:
		return fmt.Errorf("the deployment rejected the API token (401)%s; sign in again to get a new token", detail)
	case http.StatusForbidden:
		return fmt.Errorf("the deployment refused access to %s with this API token (403)%s", path, detail)
	case http.StatusNotFound:
		return fmt.Errorf("%s is not a Coder deployment (404 on %s)", displayURL(base), path)
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return fmt.Errorf("%s redirected %s (%d); use the deployment's access URL", displayURL(base), path, status)
	default:
		return fmt.Errorf("%s answered %d on %s%s", displayURL(base), status, path, detail)
	}
}

// describeTransportError names the failure of a request that got no HTTP
// answer: refused, unknown host, TLS, timeout.
func describeTransportError(base *url.URL, err error) error {
	where := displayURL(base)
	if msg, ok := tlsProblem(err); ok {
		return fmt.Errorf("TLS error talking to %s: %s", where, msg)
	}
	var dnsErr *net.DNSError
	switch {
	case errorIsRefused(err):
		return fmt.Errorf("cannot reach %s: connection refused", where)
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Errorf("cannot reach %s: no such host %q", where, dnsErr.Name)
	case isTimeout(err):
		return fmt.Errorf("cannot reach %s: timed out", where)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("cannot reach %s: canceled", where)
	default:
		return fmt.Errorf("cannot reach %s: %w", where, unwrapURLError(err))
	}
}

// displayURL is the part of a deployment URL we show: scheme and host, never
// user info (it may hold credentials) nor a path.
func displayURL(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// headerTransport sets the session's headers on every request, replacing
// any value already there, so each header travels exactly once (the
// reference implementation sends the custom headers twice on the websocket
// upgrade).
type headerTransport struct {
	header http.Header
	next   http.RoundTripper
}

func (h *headerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	for name, values := range h.header {
		req.Header[name] = append([]string(nil), values...)
	}
	return h.next.RoundTrip(req)
}

// trimForMessage keeps error messages from a hostile or confused server short.
func trimForMessage(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// WatchRoutes records the routes the kernel gives addrs now (the DERP
// relays', resolved as the engine dials them) as routes the deployment was
// reached by, beside the control host's route that each successful dial
// records. NetworkChanged compares against them.
func (c *Client) WatchRoutes(addrs []netip.Addr) {
	for _, a := range addrs {
		c.routes.reached(a.Unmap().WithZone(""))
	}
}

// NetworkChanged is called when the system's links or routes changed: if
// the kernel now routes one of the deployment's addresses through another
// device than it was reached by, it reports that once on logger, as a
// warning when the new device is a VPN's (another VPN took the
// deployment's traffic, and the tunnel may stop reaching it), else as info
// (a new uplink, which the tunnel follows). It reports nothing where routes
// cannot be looked up (Linux only for now).
func (c *Client) NetworkChanged(ctx context.Context, logger slog.Logger) {
	c.routes.check(ctx, logger, networkChanged)
}
