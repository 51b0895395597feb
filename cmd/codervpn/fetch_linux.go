package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// fetchTimeout bounds one demo download, 64 MiB included.
const fetchTimeout = 2 * time.Minute

// fetchResult is what the demo reports about one HTTP GET.
type fetchResult struct {
	Body     []byte // only when asked for
	Size     int64
	RemoteIP string
	Start    time.Time
	// Lookup, FirstByte and Total are measured from Start.
	Lookup, FirstByte, Total time.Duration
}

// fetcher downloads a URL the way a program on the tunnelled host would.
type fetcher interface {
	fetch(ctx context.Context, rawURL string, keepBody bool) (fetchResult, error)
	describe() string
}

// curlFetcher runs the system's curl inside the demo's network namespace,
// through `ip netns exec`, which also gives curl the namespace's resolver
// configuration.
type curlFetcher struct{ netns string }

func (c curlFetcher) describe() string { return "curl inside network namespace " + c.netns }

// curlMarker starts the line curl writes after the body (-w).
const curlMarker = "codervpn-demo:"

func (c curlFetcher) fetch(ctx context.Context, rawURL string, keepBody bool) (fetchResult, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	args := []string{"netns", "exec", c.netns, "curl",
		"-q", // ignore ~/.curlrc
		"-sS", "--fail", "--noproxy", "*", "--max-time", strconv.Itoa(int(fetchTimeout / time.Second)),
		"-w", "\n" + curlMarker + " %{remote_ip} %{size_download} %{time_namelookup} %{time_starttransfer} %{time_total}\n"}
	if !keepBody {
		args = append(args, "-o", "/dev/null")
	}
	args = append(args, rawURL)
	cmd := exec.CommandContext(ctx, "ip", args...)
	// No proxy variables or locale surprises from the caller's environment.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	res := fetchResult{Start: time.Now()}
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("curl %s: %w: %s", rawURL, err, strings.TrimSpace(stderr.String()))
	}
	out := stdout.Bytes()
	i := bytes.LastIndex(out, []byte("\n"+curlMarker))
	if i < 0 {
		return res, fmt.Errorf("curl %s printed no timing line", rawURL)
	}
	f := strings.Fields(string(out[i+1+len(curlMarker):]))
	if len(f) != 5 {
		return res, fmt.Errorf("curl %s printed an unexpected timing line %q", rawURL, out[i+1:])
	}
	res.RemoteIP = f[0]
	res.Size, _ = strconv.ParseInt(f[1], 10, 64)
	res.Lookup, res.FirstByte, res.Total = seconds(f[2]), seconds(f[3]), seconds(f[4])
	if keepBody {
		res.Body = out[:i]
	}
	return res, nil
}

// seconds parses curl's "0.012345" timings.
func seconds(s string) time.Duration {
	v, _ := strconv.ParseFloat(s, 64)
	return time.Duration(v * float64(time.Second))
}

// stackFetcher is the userspace path's stand-in for curl: Go's HTTP client
// over the userspace stack, names resolved by the tunnel's DNS server.
type stackFetcher struct{ dev *userspaceDevice }

func (s stackFetcher) describe() string {
	return "Go's HTTP client over the userspace TCP/IP stack (curl can only use the kernel's)"
}

func (s stackFetcher) fetch(ctx context.Context, rawURL string, keepBody bool) (fetchResult, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	res := fetchResult{Start: time.Now()}
	u, err := url.Parse(rawURL)
	if err != nil {
		return res, err
	}
	ips, err := s.dev.lookupAAAA(ctx, u.Hostname())
	if err != nil {
		return res, fmt.Errorf("resolve %s through the tunnel's DNS: %w", u.Hostname(), err)
	}
	res.Lookup = time.Since(res.Start)
	res.RemoteIP = ips[0].String()
	port := 80
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return res, fmt.Errorf("port %q of %s is not a TCP port", p, rawURL)
		}
	}
	target := netip.AddrPortFrom(ips[0], uint16(port)) //nolint:gosec // checked above
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return s.dev.stack.DialTCP(ctx, target)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	var firstByte time.Time
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotFirstResponseByte: func() { firstByte = time.Now() }})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return res, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return res, fmt.Errorf("GET %s through the userspace stack: %w", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("GET %s: %s", rawURL, resp.Status)
	}
	var sink io.Writer = io.Discard
	var body bytes.Buffer
	if keepBody {
		sink = &body
	}
	res.Size, err = io.Copy(sink, resp.Body)
	res.Total = time.Since(res.Start)
	if !firstByte.IsZero() {
		res.FirstByte = firstByte.Sub(res.Start)
	}
	if err != nil {
		return res, fmt.Errorf("GET %s: reading the body: %w", rawURL, err)
	}
	res.Body = body.Bytes()
	return res, nil
}

// parseAddr accepts curl's remote_ip, which may carry brackets or a zone.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}, errors.New("not an IP address: " + s)
	}
	return a, nil
}
