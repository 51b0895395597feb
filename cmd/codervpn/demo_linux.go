package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/coder/coder/v2/codersdk"

	"github.com/codervpn/codervpn/internal/status"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// exitInterrupted is the demo's exit code after Ctrl-C (128 + SIGINT), once
// everything it made has been removed.
const exitInterrupted = 130

// demoConfig is `codervpn demo`'s command line.
type demoConfig struct {
	Lib, DLHost string
	Userspace   bool
	Bytes       int64
	LogLevel    logLevel
}

func parseDemoFlags(args []string, usageOut io.Writer) (demoConfig, error) {
	cfg := demoConfig{}
	fs := flag.NewFlagSet("codervpn demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Lib, "lib", "", "path of libcodervpn.so (default: next to this executable, where `make` puts it)")
	fs.StringVar(&cfg.DLHost, "dlhost", "", "path of the dlhost C host (default: next to this executable)")
	fs.BoolVar(&cfg.Userspace, "userspace", false, "use the userspace path even when root")
	fs.Int64Var(&cfg.Bytes, "bytes", 64<<20, "size of the transfer that measures throughput")
	level := fs.String("log-level", "warn", "the lowest level of tunnel log shown on stderr: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usageOut, "codervpn demo [flags]",
				"Starts an embedded Coder deployment (two workspaces, three agents) and connects to it\n"+
					"through libcodervpn.so loaded by the C host, as the macOS NetworkExtension does.\n"+
					"As root: a real TUN in a private network namespace, and curl inside it fetches an\n"+
					"agent's page by DNS name and a large transfer. Otherwise: the same through a\n"+
					"userspace TCP/IP stack. Removes everything it made, also when interrupted.", fs)
			return cfg, errHelp
		}
		return cfg, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return cfg, usagef("unexpected argument %q: `demo` takes only flags", fs.Arg(0))
	}
	if cfg.Bytes <= 0 || cfg.Bytes > 1<<34 {
		return cfg, usagef("--bytes %d: choose between 1 and 16 GiB", cfg.Bytes)
	}
	var err error
	cfg.LogLevel, err = parseLogLevel(*level)
	return cfg, err
}

// cmdDemo is `codervpn demo`.
func cmdDemo(args []string, _ func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseDemoFlags(args, stdout)
	if err != nil {
		return reportCLIError("demo", err, stderr)
	}
	out := newOutput(false, stdout, stderr)
	out.dropPeers = true // the table is printed once, at the end
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var cl cleanups
	err = runDemo(ctx, cfg, out, stdout, &cl)
	// Whatever happened, undo what was made; a second Ctrl-C does not stop
	// this (the signals are still caught), and each step is bounded.
	if cerr := cl.run(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("cleaning up: %w", cerr))
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "codervpn demo: interrupted; everything it made was removed")
		return exitInterrupted
	case err != nil:
		fmt.Fprintf(stderr, "codervpn demo: %v\n", err)
		return exitError
	}
	fmt.Fprintln(stdout, "\ndemo OK: everything it started or created was stopped and removed.")
	return exitOK
}

// demoRun is one demo's state, shared by its steps.
type demoRun struct {
	cfg  demoConfig
	out  *output
	w    io.Writer
	cl   *cleanups
	tl   *timeline
	d    *vpntest.Deployment
	link *link
	// Filled by fetchAll for the summary.
	rows       []status.Row
	throughput string
}

func runDemo(ctx context.Context, cfg demoConfig, out *output, w io.Writer, cl *cleanups) error {
	r := &demoRun{cfg: cfg, out: out, w: w, cl: cl, tl: newTimeline()}
	lib, host, err := libFiles(cfg.Lib, cfg.DLHost)
	if err != nil {
		return err
	}
	r.cfg.Lib, r.cfg.DLHost = lib, host

	kernel, why := r.choosePath()
	if kernel {
		out.progress("running as root: the kernel path (a real TUN in a private network namespace, the system's curl inside it)")
	} else {
		out.notice(why + ", so this demo takes the USERSPACE PATH: the tunnel (the same libcodervpn.so in the same C host) " +
			"gets one end of a socketpair instead of a TUN, a userspace TCP/IP stack in this process plays the kernel, " +
			"and Go's HTTP client stands in for curl. Run `sudo make demo` for the kernel path.")
	}
	if err := r.startDeployment(ctx); err != nil {
		return err
	}
	var (
		dev   device
		fetch fetcher
		ready func() bool // the fetcher can resolve names
	)
	if kernel {
		name := fmt.Sprintf("%s%d", demoNetnsPrefix, os.Getpid())
		for _, n := range sweepStaleNetns() {
			out.notice("removed network namespace " + n + ", left by an earlier demo that was killed")
		}
		// Registered first, so it runs last: proof that the rest undid
		// everything.
		cl.add("check that nothing is left", func() error { return checkNetnsGone(name) })
		path, err := createDemoNetns(name, cl)
		if err != nil {
			return err
		}
		res := &nsResolver{dir: filepath.Join(netnsEtcDir, name)}
		kd, err := openKernelDevice(ctx, kernelConfig{Name: "coder0", NetNS: path, DNS: res, Notify: out.notice})
		if err != nil {
			return err
		}
		dev, fetch, ready = kd, curlFetcher{netns: name}, func() bool { return len(res.Servers()) > 0 }
	} else {
		ud, err := newUserspaceDevice()
		if err != nil {
			return err
		}
		dev, fetch, ready = ud, stackFetcher{dev: ud}, func() bool { return len(ud.dnsServers()) > 0 }
	}
	cl.add("release "+dev.Describe(), dev.Close) // bringUp owns it; Close is idempotent
	r.tl.mark(milestoneDevice, dev.Describe())
	out.progress("created " + dev.Describe())

	if err := r.connect(ctx, dev); err != nil {
		return err
	}
	if err := r.fetchAll(ctx, fetch, ready); err != nil {
		return err
	}
	return r.stop()
}

// choosePath decides between the kernel path and the userspace one, and
// says why when it is the latter.
func (r *demoRun) choosePath() (kernel bool, why string) {
	switch {
	case r.cfg.Userspace:
		return false, "--userspace was given"
	case os.Geteuid() != 0:
		return false, "not running as root (a TUN device and a network namespace need CAP_NET_ADMIN)"
	}
	for _, tool := range []string{"ip", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false, fmt.Sprintf("`%s` is not installed (apt-get install iproute2 curl)", tool)
		}
	}
	return true, ""
}

// startDeployment starts the embedded deployment with two workspaces and
// three agents.
func (r *demoRun) startDeployment(ctx context.Context) error {
	d, err := vpntest.Start(ctx, vpntest.Options{})
	if err != nil {
		return fmt.Errorf("start the embedded Coder deployment: %w", err)
	}
	r.d = d
	r.cl.add("stop the embedded deployment", d.Close)
	layout := []struct {
		ws     string
		agents []string
	}{{"dev", []string{"main", "sidecar"}}, {"build", []string{"main"}}}
	var desc []string
	for _, l := range layout {
		ws, err := d.AddWorkspace(l.ws, codersdk.WorkspaceStatusRunning)
		if err != nil {
			return fmt.Errorf("add workspace %s: %w", l.ws, err)
		}
		for _, a := range l.agents {
			if _, err := d.AddAgent(ctx, ws.ID, a); err != nil {
				return fmt.Errorf("add agent %s to workspace %s: %w", a, l.ws, err)
			}
		}
		desc = append(desc, fmt.Sprintf("%s (agents %s)", l.ws, strings.Join(l.agents, ", ")))
	}
	r.tl.mark(milestoneDeployment, d.URL.String())
	r.out.progress(fmt.Sprintf("embedded Coder deployment at %s, user %s, workspaces %s", d.URL, d.OwnerName, strings.Join(desc, " and ")))
	return nil
}

// connect runs the tunnel through the C library and waits until every agent
// is known and the tunnel's DNS server is configured.
func (r *demoRun) connect(ctx context.Context, dev device) error {
	l, err := bringUp(ctx, dev, linkConfig{
		Start: &vpnpb.StartRequest{CoderUrl: r.d.URL.String(), ApiToken: r.d.Token, DeviceOs: "Linux", CoderDesktopVersion: "codervpn demo"},
		Backend: backendConfig{Kind: backendDylib, Lib: r.cfg.Lib, DLHost: r.cfg.DLHost, LogLevel: r.cfg.LogLevel,
			OnHandle: func(h int) { r.tl.mark(milestoneLibrary, fmt.Sprintf("dlhost: coderStartVPN returned handle %d", h)) }},
		Out: r.out, Timeline: r.tl,
	})
	if err != nil {
		return err
	}
	r.link = l
	r.cl.add("stop the tunnel", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
		defer cancel()
		return l.down(ctx)
	})
	r.out.progress(fmt.Sprintf("tunnel running in %s via dlhost, the NetworkExtension's path", filepath.Base(r.cfg.Lib)))
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return l.mgr.Wait(wctx, func(v managerView) bool { return countAgents(v.Rows()) == len(r.d.Agents()) })
}

func countAgents(rows []status.Row) int {
	n := 0
	for _, row := range rows {
		if row.Agent != "" {
			n++
		}
	}
	return n
}
