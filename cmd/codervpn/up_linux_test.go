package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/coder/v2/codersdk"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

var coderPrefix = netip.MustParsePrefix("fd60:627a:a42b::/48")

// kernelView is what the kernel reports for the TUN inside a namespace.
type kernelView struct {
	exists bool
	up     bool
	mtu    int
	addrs  []netip.Prefix // global ones
	routes []netip.Prefix // in the main table
}

func readKernelView(t *testing.T, nsName, link string) kernelView {
	t.Helper()
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		t.Fatalf("open namespace %s: %v", nsName, err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink in %s: %v", nsName, err)
	}
	defer nl.Close()
	l, err := nl.LinkByName(link)
	if err != nil {
		var lnf netlink.LinkNotFoundError
		if errors.As(err, &lnf) {
			return kernelView{}
		}
		t.Fatalf("look up %s: %v", link, err)
	}
	v := kernelView{exists: true, up: l.Attrs().Flags&net.FlagUp != 0, mtu: l.Attrs().MTU}
	addrs, err := nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, ok := netipPrefix(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
			v.addrs = append(v.addrs, p)
		}
	}
	routes, err := nl.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if p, ok := netipPrefix(r.Dst); ok && r.Table == syscall.RT_TABLE_MAIN && !p.Addr().IsLinkLocalUnicast() {
			v.routes = append(v.routes, p)
		}
	}
	return v
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), ok
}

// TestUpEndToEnd runs `codervpn up` against the embedded deployment with the
// TUN in a private network namespace, for each backend: while it is up the
// kernel has the tunnel's address and route and curl reaches an agent by IP
// through the TUN; after SIGTERM it exits 0 and the interface is gone.
func TestUpEndToEnd(t *testing.T) {
	requireRoot(t)
	requireTools(t, "ip", "curl")
	bin := codervpnBinary(t)
	for _, backend := range []string{backendInProcess, backendDaemon, backendDylib} {
		t.Run(backend, func(t *testing.T) {
			args := []string{"--json", "--backend", backend, "--log-level", "warn",
				"--header", "X-Codervpn-Test: " + backend}
			if backend == backendDylib {
				lib, host := dylibFiles(t)
				args = append(args, "--lib", lib, "--dlhost", host)
			}
			testUp(t, bin, args)
		})
	}
}

func testUp(t *testing.T, bin string, args []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := vpntest.New(t, vpntest.Options{})
	agent, err := d.AddRunningAgent(ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	ns := testNetns(t)
	cmd := exec.Command(bin, append([]string{"up", "--netns", ns, "--url", d.URL.String()}, args...)...)
	// The token comes from the environment, as the Coder CLI's does.
	cmd.Env = append(os.Environ(), "CODER_SESSION_TOKEN="+d.Token)
	stdout, stderr := startPiped(t, cmd)
	events := decodeEvents(t, stdout)
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()

	// The table may be printed before or after the "connected" line.
	var connected, listed bool
	waitEvent(ctx, t, events, "the connected progress event and a table listing the agent", func(e jsonEvent) bool {
		connected = connected || e.Type == "progress" && strings.HasPrefix(e.Message, "connected through TUN coder0")
		listed = listed || e.Type == "peers" && len(e.Peers) == 1 && e.Peers[0].Agent == "main" &&
			slices.Contains(e.Peers[0].Addresses, agent.Addr.String())
		return connected && listed
	})

	checkTunConfigured(t, ns)
	curlAgentInNetns(ctx, t, ns, agent.Addr)
	checkHeaderOnce(t, d, "X-Codervpn-Test")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, events, "the stopped event", func(e jsonEvent) bool { return e.Type == "stopped" })
	killed = true
	if code := exitCode(t, cmd, time.Minute); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, stderr.String())
	}
	if v := readKernelView(t, ns, "coder0"); v.exists {
		t.Fatalf("after SIGTERM coder0 still exists: %+v", v)
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Errorf("stderr of a clean run:\n%s", s)
	}
}

// checkTunConfigured asserts that coder0 in ns carries the tunnel's
// settings: up, MTU 1280, its /128 and the route to Coder's prefix.
func checkTunConfigured(t *testing.T, ns string) {
	t.Helper()
	v := readKernelView(t, ns, "coder0")
	if !v.exists || !v.up || v.mtu != 1280 {
		t.Fatalf("while up: coder0 %+v, want up with MTU 1280", v)
	}
	if len(v.addrs) != 1 || v.addrs[0].Bits() != 128 || !coderPrefix.Contains(v.addrs[0].Addr()) {
		t.Fatalf("while up: addresses %v, want one /128 in %v", v.addrs, coderPrefix)
	}
	if !slices.Contains(v.routes, coderPrefix) {
		t.Fatalf("while up: routes %v lack %v", v.routes, coderPrefix)
	}
}

// curlAgentInNetns fetches the agent's page by IP with curl inside the
// namespace: through the kernel's TUN only.
func curlAgentInNetns(ctx context.Context, t *testing.T, ns string, agent netip.Addr) {
	t.Helper()
	url := "http://[" + agent.String() + "]/"
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "curl", "-q", "-sS", "--fail",
		"--noproxy", "*", "--max-time", "30", url).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello from agent main") {
		t.Fatalf("curl %s in %s: %v: %s", url, ns, err, out)
	}
}

// checkHeaderOnce asserts the custom header reached the deployment, once per
// request.
func checkHeaderOnce(t *testing.T, d *vpntest.Deployment, name string) {
	t.Helper()
	reqs := d.RequestsTo("/api/v2/users/me")
	if len(reqs) == 0 {
		t.Fatal("the deployment saw no /api/v2/users/me request")
	}
	for _, r := range reqs {
		if n := len(r.Header.Values(name)); n != 1 {
			t.Fatalf("%s carried %s %d times, want once", r.Path, name, n)
		}
	}
}

// TestUpFailures checks that what goes wrong before the tunnel runs ends in
// one clear line and a non-zero exit, leaving no interface behind.
func TestUpFailures(t *testing.T) {
	requireRoot(t)
	requireTools(t, "ip")
	bin := codervpnBinary(t)
	d := vpntest.New(t, vpntest.Options{})
	closed := closedPort(t)
	tests := []struct {
		name, url, token, want string
	}{
		{"bad token", d.URL.String(), "not-the-token", "the deployment rejected the API token (401)"},
		{"unreachable URL", "http://" + closed, d.Token, "cannot reach http://" + closed + ": connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := testNetns(t)
			cmd := exec.Command(bin, "up", "--netns", ns, "--url", tc.url, "--token", tc.token)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if code := exitCode(t, cmd, time.Minute); code != exitError {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, exitError, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "codervpn up: ") || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr %q, want one line saying %q", stderr.String(), tc.want)
			}
			if strings.Contains(stderr.String(), d.Token) && tc.token == d.Token {
				t.Fatal("the token appears in the error")
			}
			if v := readKernelView(t, ns, "coder0"); v.exists {
				t.Fatalf("coder0 left behind: %+v", v)
			}
		})
	}
}

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestUpText checks the output for people: progress lines, the DNS notice,
// the table, and the goodbye after SIGTERM.
func TestUpText(t *testing.T) {
	requireRoot(t)
	requireTools(t, "ip")
	bin := codervpnBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := vpntest.New(t, vpntest.Options{})
	ws, err := d.AddWorkspace("dev", codersdk.WorkspaceStatusRunning)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.AddAgent(ctx, ws.ID, "main"); err != nil {
		t.Fatal(err)
	}
	ns := testNetns(t)
	cmd := exec.Command(bin, "up", "--netns", ns, "--url", d.URL.String(), "--token", d.Token)
	stdout, stderr := startPiped(t, cmd)
	lines := make(chan string, 256)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var out []string
	// The table may come before or after the "connected" line.
	for connected, table := false, false; !connected || !table; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("up ended early:\n%s\n%s", strings.Join(out, "\n"), stderr.String())
			}
			out = append(out, l)
			connected = connected || strings.HasPrefix(l, "==> connected through")
			table = table || strings.HasPrefix(l, "dev ") && strings.Contains(l, " main ")
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			t.Fatalf("no table row for dev/main:\n%s", strings.Join(out, "\n"))
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		out = append(out, l)
	}
	if code := exitCode(t, cmd, time.Minute); code != 0 {
		t.Fatalf("exit code %d after SIGINT\n%s", code, stderr.String())
	}
	text := strings.Join(out, "\n")
	for _, want := range []string{
		"==> creating TUN device coder0",
		"==> connecting to " + d.URL.String() + " (tunnel: inprocess)",
		"==> applied network settings: address fd60:627a:a42b:",
		"NOTE: DNS names are not configured: the TUN is in network namespace /run/netns/" + ns,
		"==> connected through TUN coder0 in network namespace",
		"WORKSPACE  AGENT  NAME",
		"==> interrupt: disconnecting",
		"==> disconnected; the network settings were removed",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("stdout:\n%s\nstderr:\n%s", text, stderr.String())
	}
}
