package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/codervpn/codervpn/internal/buildinfo"
	"github.com/codervpn/codervpn/internal/status"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/manager"
)

// serviceStartTimeout bounds `up` waiting for the service's StartResponse
// (the service bounds the Start itself at 90 s).
const serviceStartTimeout = 2 * time.Minute

// runServiceUp is `up` through the service: Start with the login, progress
// while it connects, then the table; it returns once connected (or with
// --follow keeps printing the status until a signal).
func runServiceUp(cfg upConfig, out *output, sigs <-chan os.Signal) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	began := time.Now()
	c, err := dialService(ctx, cfg.Socket)
	if err != nil {
		return err
	}
	defer c.Close()
	out.progress(fmt.Sprintf("asking the codervpn service to connect to %s", cfg.URL.Redacted()))
	req := &vpnpb.StartRequest{
		CoderUrl: cfg.URL.String(), ApiToken: cfg.Token, Headers: protoHeaders(cfg.Headers),
		DeviceOs: "Linux", CoderDesktopVersion: "codervpn " + buildinfo.Version, Persist: cfg.Persist,
	}
	sctx, scancel := context.WithTimeout(ctx, serviceStartTimeout)
	defer scancel()
	replied := make(chan error, 1)
	go func() {
		r, err := c.call(sctx, &vpnpb.ClientMessage{Msg: &vpnpb.ClientMessage_Start{Start: req}})
		switch {
		case err != nil:
			replied <- err
		case !r.GetStart().GetSuccess():
			replied <- &startError{msg: r.GetStart().GetErrorMessage()}
		default:
			replied <- nil
		}
	}()
	for waiting := true; waiting; {
		select {
		case err := <-replied:
			if err != nil {
				if ctx.Err() != nil {
					return errors.New("interrupted while connecting; the service goes on connecting (`codervpn down` stops it)")
				}
				return err
			}
			waiting = false
		case p := <-c.progress:
			out.progress("the service is starting the tunnel (" + strings.ToLower(p.GetStage().String()) + ")")
		case st := <-c.statuses:
			if st.GetLifecycle() == vpnpb.Status_STARTING {
				out.progress("connecting")
			}
		}
	}
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	out.progress(fmt.Sprintf("connected in %s", time.Since(began).Round(time.Millisecond)))
	out.Emit(status.Event{Type: status.EventPeers, Peers: statusRows(st)})
	if !cfg.Follow {
		return nil
	}
	out.progress("following the status; Ctrl-C stops following (the tunnel stays up)")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.sp.Done():
			return fmt.Errorf("the codervpn service closed the connection: %w", c.sp.Err())
		case st := <-c.statuses:
			if st.GetLifecycle() != vpnpb.Status_STARTED {
				out.notice("the tunnel is " + lifecycleName(st) + errSuffix(st))
			}
			out.Emit(status.Event{Type: status.EventPeers, Peers: statusRows(st)})
		}
	}
}

// statusRows is the table of a Status.
func statusRows(st *vpnpb.Status) []status.Row {
	peers, _ := manager.NewPeers(st.GetPeerUpdate())
	return status.Rows(peers, time.Now())
}

func lifecycleName(st *vpnpb.Status) string {
	return strings.ToLower(st.GetLifecycle().String())
}

func errSuffix(st *vpnpb.Status) string {
	if e := st.GetErrorMessage(); e != "" {
		return ": " + e
	}
	return ""
}

// clientFlags parses the flags `status` and `down` share.
func clientFlags(name string, args []string, getenv func(string) string, usageOut io.Writer, jsonFlag bool) (sock string, jsonOut bool, err error) {
	fs := flag.NewFlagSet("codervpn "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&sock, "socket", "", "the codervpn service's socket (env CODERVPN_SOCKET; default "+defaultSocket+")")
	if jsonFlag {
		fs.BoolVar(&jsonOut, "json", false, "print the status as one JSON object")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usageOut, "codervpn "+name+" [flags]", "Talks to the codervpn service; needs no root, only membership of its group.", fs)
			return "", false, errHelp
		}
		return "", false, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return "", false, usagef("unexpected argument %q", fs.Arg(0))
	}
	if sock == "" {
		sock = getenv("CODERVPN_SOCKET")
	}
	if sock == "" {
		sock = defaultSocket
	}
	return sock, jsonOut, nil
}

// statusJSON is `codervpn status --json`.
type statusJSON struct {
	Lifecycle string       `json:"lifecycle"`
	Error     string       `json:"error,omitempty"`
	Peers     []status.Row `json:"peers"`
}

// cmdStatus prints the service's status once.
func cmdStatus(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	sock, jsonOut, err := clientFlags("status", args, getenv, stdout, true)
	if err != nil {
		return reportCLIError("status", err, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dialService(ctx, sock)
	if err != nil {
		return reportCLIError("status", err, stderr)
	}
	defer c.Close()
	st, err := c.status(ctx)
	if err != nil {
		return reportCLIError("status", err, stderr)
	}
	rows := statusRows(st)
	if jsonOut {
		if rows == nil {
			rows = []status.Row{}
		}
		enc := json.NewEncoder(stdout)
		_ = enc.Encode(statusJSON{Lifecycle: lifecycleName(st), Error: st.GetErrorMessage(), Peers: rows})
		return exitOK
	}
	fmt.Fprintf(stdout, "Tunnel: %s%s\n", lifecycleName(st), errSuffix(st))
	if st.GetLifecycle() == vpnpb.Status_STARTED {
		fmt.Fprint(stdout, status.Table(rows))
	}
	return exitOK
}

// cmdDown stops the service's tunnel and forgets a persisted login.
func cmdDown(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	sock, _, err := clientFlags("down", args, getenv, stdout, false)
	if err != nil {
		return reportCLIError("down", err, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	c, err := dialService(ctx, sock)
	if err != nil {
		return reportCLIError("down", err, stderr)
	}
	defer c.Close()
	r, err := c.call(ctx, &vpnpb.ClientMessage{Msg: &vpnpb.ClientMessage_Stop{Stop: &vpnpb.StopRequest{}}})
	if err != nil {
		return reportCLIError("down", err, stderr)
	}
	if !r.GetStop().GetSuccess() {
		return reportCLIError("down", errors.New(r.GetStop().GetErrorMessage()), stderr)
	}
	fmt.Fprintln(stdout, "Disconnected; the network settings were removed.")
	return exitOK
}
