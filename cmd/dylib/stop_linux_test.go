package main

import (
	"context"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/fdtest"
	"github.com/codervpn/codervpn/internal/hostlog"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// stopBound is what coderStopVPN promises a host that stopped reading.
const stopBound = time.Second

// A host that stops reading the tunnel→manager pipe (a NetworkExtension
// calling coderStopVPN from its only reader, say) while the tunnel has
// things to send, then calls coderStopVPN: it returns 0 within stopBound,
// not after the 15 s write timeout.
//
// The pipe is full before the stop, and the tunnel has a reply (to a
// GetPeerUpdate) and a PeerUpdate (a new agent) to write into it. Which of
// its writes are blocked at the moment of the stop is up to the scheduler;
// vpnlib's TestTunnelCloseWhileManagerStopsReading pins the one that used
// to hold the stop (15 s before the fix).
func TestStopWithHostNotReading(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	w := newWorld(ctx, t)
	host := startDLHost(t)
	records := host.setLogger(hostlog.LevelInfo, false)
	base := host.warm()

	tunR, mgrW := pipeFiles(t)
	mgrR, tunW := pipeFiles(t)
	handle := host.start(socketFile(t), tunR, tunW)
	if handle < 0 {
		t.Fatalf("coderStartVPN = %d", handle)
	}
	reader := fdtest.NewPausableReader(mgrR)
	var mgr *speaker.Manager
	mgr, err := speaker.NewManager(ctx, reader, mgrW, speaker.Options[*vpnpb.TunnelMessage]{
		OnRequest: func(req *vpnpb.TunnelMessage) {
			go func() { // off the read goroutine
				_ = mgr.Reply(req, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_NetworkSettings{
					NetworkSettings: &vpnpb.NetworkSettingsResponse{Success: true},
				}})
			}()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Close() })
	resp, err := mgr.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{
		Start: &vpnpb.StartRequest{CoderUrl: w.d.URL.String(), ApiToken: w.d.Token},
	}})
	if err != nil || !resp.GetStart().GetSuccess() {
		t.Fatalf("StartRequest: %v %v", resp, err)
	}

	// Stop reading: the reader parks on the next read, which the reply to
	// a GetPeerUpdate wakes; then the pipe is filled to the brim.
	reader.Pause()
	calls := make(chan error, 2)
	go func() {
		_, err := mgr.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}})
		calls <- err
	}()
	select {
	case <-reader.Parked():
	case <-ctx.Done():
		t.Fatal("the manager's reader never parked")
	}
	t.Logf("filled the tunnel→manager pipe with %d bytes", fdtest.FillPipe(t, tunW))
	go func() {
		_, err := mgr.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}})
		calls <- err
	}()
	if _, err := w.d.AddAgent(ctx, w.agent.WorkspaceID, "second"); err != nil {
		t.Fatal(err)
	}

	var rc int32
	took := timed(func() { rc = host.stop(handle) })
	t.Logf("coderStopVPN returned %d after %s with the host not reading", rc, took.Round(time.Millisecond))
	if rc != 0 || took > stopBound {
		t.Fatalf("coderStopVPN = %d after %s, want 0 within %s", rc, took.Round(time.Millisecond), stopBound)
	}
	records.waitLine(t, hostlog.LevelInfo, "vpn: the CoderVPN session ended")
	_ = mgr.Close()
	reader.Close()
	for range 2 {
		<-calls // failed: the manager closed
	}
	tunW.Close()
	host.waitFDs(base, "after coderStopVPN")
}
