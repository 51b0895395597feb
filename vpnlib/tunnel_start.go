package vpnlib

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/sys/unix"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/tailnet"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// startParams is a validated StartRequest.
type startParams struct {
	url     *url.URL
	token   string
	header  http.Header // sent on every request: custom headers, token, telemetry
	secrets []string    // what log redaction removes
	tunFD   int
}

// validateStart checks the request before anything touches the network.
// Every error names the field to fix.
func validateStart(req *vpnpb.StartRequest, cfgTunFD int) (startParams, error) {
	var p startParams
	if err := checkStartSizes(req); err != nil {
		return p, err
	}
	raw := strings.TrimSpace(req.GetCoderUrl())
	if raw == "" {
		return p, errors.New("StartRequest.coder_url is empty; set it to the deployment's URL, e.g. https://coder.example.com")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's errors are *url.Error; its Err is the part worth saying.
		return p, fmt.Errorf("StartRequest.coder_url is not a valid URL: %w", errors.Unwrap(err))
	}
	// Credentials in the URL are redacted from every log and never quoted
	// in an error; they are not sent either (the API token authenticates).
	p.secrets = append(p.secrets, urlSecrets(u)...)
	u.User = nil
	if u.Scheme != "http" && u.Scheme != "https" {
		return p, fmt.Errorf("StartRequest.coder_url must start with https:// or http://, not %q", u.Scheme+":")
	}
	if u.Hostname() == "" {
		return p, fmt.Errorf("StartRequest.coder_url %q has no host", u.String())
	}
	p.url = u

	p.token = req.GetApiToken()
	if strings.TrimSpace(p.token) == "" {
		return p, errors.New("StartRequest.api_token is empty; sign in to the deployment to get a session token")
	}
	if !httpguts.ValidHeaderFieldValue(p.token) {
		return p, errors.New("StartRequest.api_token contains characters a header cannot carry (a newline?)")
	}
	p.secrets = append(p.secrets, tokenSecrets(p.token)...)

	p.header = http.Header{}
	for i, h := range req.GetHeaders() {
		if !httpguts.ValidHeaderFieldName(h.GetName()) {
			return p, fmt.Errorf("StartRequest.headers[%d].name %q is not a valid HTTP header name", i, h.GetName())
		}
		if !httpguts.ValidHeaderFieldValue(h.GetValue()) {
			return p, fmt.Errorf("StartRequest.headers[%d].value (for %s) is not a valid HTTP header value", i, h.GetName())
		}
		p.header.Add(h.GetName(), h.GetValue())
		p.secrets = append(p.secrets, h.GetValue())
	}
	p.header.Set(codersdk.SessionTokenHeader, p.token)
	telemetry := codersdk.CoderDesktopTelemetry{
		DeviceID:            req.GetDeviceId(),
		DeviceOS:            req.GetDeviceOs(),
		CoderDesktopVersion: req.GetCoderDesktopVersion(),
	}
	if !telemetry.IsEmpty() {
		b, err := json.Marshal(telemetry)
		if err != nil {
			return p, fmt.Errorf("encode the desktop telemetry header: %w", err)
		}
		p.header.Set(codersdk.CoderDesktopTelemetryHeader, string(b))
	}

	if cfgTunFD >= 0 {
		p.tunFD = cfgTunFD
		if err := checkFD(cfgTunFD); err != nil {
			return p, fmt.Errorf("the tunnel fd given to the library (%d) is not usable: %w", cfgTunFD, err)
		}
	} else {
		// 0 is proto3's "unset"; it would also be our stdin.
		p.tunFD = int(req.GetTunnelFileDescriptor())
		if p.tunFD <= 0 {
			return p, fmt.Errorf("StartRequest.tunnel_file_descriptor is %d (unset) and no tunnel fd was given to the library", p.tunFD)
		}
		if err := checkFD(p.tunFD); err != nil {
			return p, fmt.Errorf("StartRequest.tunnel_file_descriptor %d is not usable: %w", p.tunFD, err)
		}
	}
	return p, nil
}

// minURLUserSecretLen is the shortest user name, given without a password,
// that is redacted as a credential (https://<token>@host); shorter names
// ("git", "admin") are words that redaction would shred logs over.
const minURLUserSecretLen = 12

// urlSecrets returns the credentials u's userinfo carries: the password, or
// a lone user name long enough to be a token.
func urlSecrets(u *url.URL) []string {
	if u.User == nil {
		return nil
	}
	if pw, ok := u.User.Password(); ok {
		return []string{pw}
	}
	if name := u.User.Username(); len(name) >= minURLUserSecretLen {
		return []string{name}
	}
	return nil
}

// loggableURL is raw without userinfo, query and fragment, which may carry
// credentials, for the log line that records a StartRequest before it is
// validated (and before its secrets reach the redactor).
func loggableURL(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "(not a valid URL)"
	}
	u.User, u.RawQuery, u.Fragment, u.RawFragment = nil, "", "", ""
	return u.String()
}

// checkFD reports whether fd is open in this process.
func checkFD(fd int) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return fmt.Errorf("not an open file descriptor: %w", err)
	}
	return nil
}

// connect turns a StartRequest into a running session, or into an error
// that says what to fix. On error nothing it made is left behind.
func (t *Tunnel) connect(ctx context.Context, req *vpnpb.StartRequest) (*session, error) {
	p, err := validateStart(req, t.cfg.TunFD)
	// Even a request that fails validation may carry secrets (a password
	// in the URL, a token beside a bad header): redact them from now on.
	t.redactor.setSecrets(p.secrets)
	if err != nil {
		return nil, err
	}
	sess, err := t.startSession(ctx, p)
	switch {
	case err == nil:
		return sess, nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		// Say that we gave up, and what we were waiting for.
		return nil, fmt.Errorf("the tunnel did not start within %s: %w", t.cfg.StartTimeout, err)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%w: %w", context.Cause(ctx), err)
	default:
		return nil, err
	}
}

// dnsSuffix is the deployment's hostname suffix, "coder" when it has none
// (older deployments do not report one).
func dnsSuffix(s string) string {
	s = strings.Trim(s, ".")
	if s == "" {
		return tailnet.CoderDNSSuffix
	}
	return s
}
