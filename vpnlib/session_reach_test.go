package vpnlib

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
)

// pairedDeployment answers /users/me and the connection info only once
// both were asked: a client that asks one after the other's answer waits
// for gaveUp and gets a 503. It stands for a deployment far away, where a
// Start pays every round trip made in turn.
func pairedDeployment(t *testing.T, gaveUp time.Duration) *url.URL {
	t.Helper()
	me, info := make(chan struct{}), make(chan struct{})
	answer := func(w http.ResponseWriter, r *http.Request, mine, other chan struct{}, body any) {
		close(mine)
		select {
		case <-other:
		case <-time.After(gaveUp):
			http.Error(w, "asked one at a time", http.StatusServiceUnavailable)
			return
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v2/users/me", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, me, info, codersdk.User{ReducedUser: codersdk.ReducedUser{
			MinimalUser: codersdk.MinimalUser{ID: uuid.New(), Username: "alice"}}})
	})
	mux.HandleFunc("/api/v2/workspaceagents/connection", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, info, me, workspacesdk.AgentConnectionInfo{DERPMap: &tailcfg.DERPMap{
			Regions: map[int]*tailcfg.DERPRegion{1: {RegionID: 1, RegionCode: "test", Nodes: []*tailcfg.DERPNode{
				{Name: "1a", RegionID: 1, HostName: "127.0.0.1"}}}}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A Start asks the deployment who the token belongs to and how to reach its
// relays at the same time, so that the two cost one round trip, not two.
// (It asked one after the other.)
func TestReachDeploymentAsksBothAtOnce(t *testing.T) {
	t.Parallel()
	u := pairedDeployment(t, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &sessionStart{t: &Tunnel{}, p: startParams{url: u, header: http.Header{}}, logger: slog.Make()}
	start := time.Now()
	if err := s.reachDeployment(ctx); err != nil {
		t.Fatalf("reachDeployment: %v", err)
	}
	if s.me.Username != "alice" || s.info.DERPMap == nil || len(s.info.DERPMap.Regions) != 1 {
		t.Errorf("got user %q and DERP map %v", s.me.Username, s.info.DERPMap)
	}
	t.Logf("both answered in %v", time.Since(start))
}

// When the deployment refuses both questions, the error is the one about
// who the token belongs to, as when they were asked in turn.
func TestReachDeploymentReportsTheUserError(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v2/users/me", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(codersdk.Response{Message: "token for users/me rejected"})
	})
	mux.HandleFunc("/api/v2/workspaceagents/connection", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(codersdk.Response{Message: "token for connection rejected"})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	s := &sessionStart{t: &Tunnel{}, p: startParams{url: u, header: http.Header{}}, logger: slog.Make()}
	err = s.reachDeployment(context.Background())
	if err == nil || strings.Contains(err.Error(), "connection rejected") {
		t.Fatalf("reachDeployment: %v, want the /users/me refusal", err)
	}
}
