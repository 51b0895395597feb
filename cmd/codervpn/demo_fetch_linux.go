package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/codervpn/codervpn/internal/status"
)

// demoAgent is the agent the demo talks to, by the name a user types.
const (
	demoWorkspace = "dev"
	demoAgentName = "main"
)

// fetchAll resolves the agent's name through the tunnel's DNS, fetches its
// page and the large transfer, and prints what happened.
func (r *demoRun) fetchAll(ctx context.Context, f fetcher, ready func() bool) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := r.link.mgr.Wait(wctx, func(managerView) bool { return ready() })
	cancel()
	if err != nil {
		return fmt.Errorf("waiting for the tunnel's DNS settings: %w", err)
	}
	var agentAddr string
	for _, a := range r.d.Agents() {
		for _, ws := range r.d.Workspaces() {
			if ws.ID == a.WorkspaceID && ws.Name == demoWorkspace && a.Name == demoAgentName {
				agentAddr = a.Addr.String()
			}
		}
	}
	host := fmt.Sprintf("%s.%s.me.coder", demoAgentName, demoWorkspace)

	pageURL := "http://" + host + "/"
	r.out.progress(fmt.Sprintf("GET %s with %s", pageURL, f.describe()))
	page, err := f.fetch(ctx, pageURL, true)
	if err != nil {
		return err
	}
	r.tl.markAt(milestoneFirstByte, page.Start.Add(page.FirstByte), "of the agent's page")
	ip, err := parseAddr(page.RemoteIP)
	if err != nil || ip.String() != agentAddr {
		return fmt.Errorf("%s was reached at %q, but the agent's address is %s", host, page.RemoteIP, agentAddr)
	}
	body := strings.TrimSpace(string(page.Body))
	fmt.Fprintf(r.w, "    %s resolved by the tunnel's DNS to %s in %s\n", host, ip, fmtMillis(page.Lookup))
	fmt.Fprintf(r.w, "    the agent answered: %q\n", body)
	if !strings.Contains(body, "hello from agent "+demoAgentName) {
		return fmt.Errorf("the agent's page is not what it serves: %q", body)
	}

	bytesURL := fmt.Sprintf("http://%s/bytes?n=%d", host, r.cfg.Bytes)
	r.out.progress(fmt.Sprintf("GET %s (%s) with %s", bytesURL, fmtBytes(r.cfg.Bytes), f.describe()))
	big, err := f.fetch(ctx, bytesURL, false)
	if err != nil {
		return err
	}
	if big.Size != r.cfg.Bytes {
		return fmt.Errorf("the transfer brought %d bytes, want %d", big.Size, r.cfg.Bytes)
	}
	r.tl.markAt(milestoneTransfer, big.Start.Add(big.Total), fmtBytes(big.Size))
	r.throughput = throughputLine(big)
	fmt.Fprintf(r.w, "    %s\n", r.throughput)

	// Agents show "connected" with a latency once the tunnel's pings (every
	// few seconds) come back; wait for that briefly, for a telling table.
	wctx, cancel = context.WithTimeout(ctx, 12*time.Second)
	if r.link.mgr.Wait(wctx, func(v managerView) bool { return allPinged(v.Rows()) }) == nil {
		r.tl.mark(milestonePinged, "every agent answered the tunnel's ping")
	}
	cancel()
	r.rows = r.link.mgr.Rows()
	return nil
}

func allPinged(rows []status.Row) bool {
	for _, row := range rows {
		if row.Agent != "" && (row.State != string(status.StateConnected) || row.Latency == 0) {
			return false
		}
	}
	return len(rows) > 0
}

func throughputLine(res fetchResult) string {
	secs := res.Total.Seconds()
	if secs <= 0 {
		secs = 1e-9
	}
	mib := float64(res.Size) / (1 << 20)
	return fmt.Sprintf("throughput: %s in %.2fs = %.1f MiB/s (%.0f Mbit/s), first byte after %s",
		fmtBytes(res.Size), secs, mib/secs, float64(res.Size)*8/secs/1e6, fmtMillis(res.FirstByte))
}

func fmtBytes(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// stop ends the session the way the NetworkExtension does (StopRequest,
// StopResponse, then coderStopVPN) and prints the summary.
func (r *demoRun) stop() error {
	r.out.progress("stopping: StopRequest, StopResponse, then coderStopVPN in the C host")
	ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
	defer cancel()
	if err := r.link.down(ctx); err != nil {
		return fmt.Errorf("stopping the tunnel: %w", err)
	}
	r.tl.mark(milestoneStopped, "StopResponse received, coderStopVPN returned 0, settings removed")

	fmt.Fprintf(r.w, "\nTimeline (since the demo started; step since the previous line):\n")
	r.tl.print(r.w)
	fmt.Fprintf(r.w, "\nStatus (as last reported by the tunnel):\n%s", status.Table(r.rows))
	fmt.Fprintf(r.w, "\n%s\n", r.throughput)
	return nil
}
