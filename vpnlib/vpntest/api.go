package vpntest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
)

// signedOutMessage is the message coderd puts in every 401 it answers for a
// missing or rejected API token.
const signedOutMessage = "You are signed out or your session has expired. Please sign in again to continue."

// maxRecordedRequests bounds the request log so a long-running demo does not
// grow without limit; the oldest entries are dropped first.
const maxRecordedRequests = 4096

func (d *Deployment) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /derp", d.derpHandler())
	mux.HandleFunc("GET /derp/latency-check", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	mux.Handle("GET /api/v2/users/{user}", d.authed(http.HandlerFunc(d.handleUser)))
	mux.Handle("GET /api/v2/workspaceagents/connection", d.authed(http.HandlerFunc(d.handleConnectionInfo)))
	mux.Handle("GET /api/v2/tailnet", d.authed(http.HandlerFunc(d.handleTailnet)))
	// Anything else under /api is a JSON 404, as coderd answers.
	mux.Handle("/api/", d.authed(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, codersdk.Response{
			Message: fmt.Sprintf("Route %s %s not found.", r.Method, r.URL.Path),
		})
	})))
	return mux
}

// authed rejects requests whose Coder-Session-Token header is missing or not
// the deployment's token, with coderd's 401 body.
func (d *Deployment) authed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get(codersdk.SessionTokenHeader)
		if got == "" {
			writeJSON(w, http.StatusUnauthorized, codersdk.Response{
				Message: signedOutMessage,
				Detail:  fmt.Sprintf("Header %q must be provided.", codersdk.SessionTokenHeader),
			})
			return
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(d.Token)) != 1 {
			writeJSON(w, http.StatusUnauthorized, codersdk.Response{
				Message: signedOutMessage,
				Detail:  "API key is invalid.",
			})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// User returns the deployment's only user, as /api/v2/users/me reports it.
func (d *Deployment) User() codersdk.User {
	return codersdk.User{
		ReducedUser: codersdk.ReducedUser{
			MinimalUser: codersdk.MinimalUser{
				ID:       d.OwnerID,
				Username: d.OwnerName,
				Name:     d.OwnerName,
			},
			Email:     d.OwnerName + "@example.com",
			CreatedAt: d.state.created,
			UpdatedAt: d.state.created,
			Status:    codersdk.UserStatusActive,
			LoginType: codersdk.LoginTypePassword,
		},
		OrganizationIDs: []uuid.UUID{},
		Roles:           []codersdk.SlimRole{{Name: "owner", DisplayName: "Owner"}},
	}
}

func (d *Deployment) handleUser(w http.ResponseWriter, r *http.Request) {
	who := r.PathValue("user")
	if who != codersdk.Me && who != d.OwnerName && who != d.OwnerID.String() {
		writeJSON(w, http.StatusNotFound, codersdk.Response{
			Message: fmt.Sprintf("User %q not found.", who),
		})
		return
	}
	writeJSON(w, http.StatusOK, d.User())
}

// ConnectionInfo is what GET /api/v2/workspaceagents/connection returns.
func (d *Deployment) ConnectionInfo() workspacesdk.AgentConnectionInfo {
	return workspacesdk.AgentConnectionInfo{
		DERPMap:                  d.clientDERPMap(),
		DERPForceWebSockets:      d.opts.DERPForceWebSockets,
		DisableDirectConnections: d.opts.BlockDirect,
		HostnameSuffix:           d.opts.HostnameSuffix,
	}
}

func (d *Deployment) handleConnectionInfo(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, d.ConnectionInfo())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// RecordedRequest is one HTTP request the deployment received, for tests that
// assert what a client sent (e.g. that a custom header appears exactly once).
type RecordedRequest struct {
	Time     time.Time
	Method   string
	Path     string
	RawQuery string
	// Header is a copy of the request headers as received (so a header sent
	// twice has two values).
	Header http.Header
}

type requestLog struct {
	mu   sync.Mutex
	max  int
	reqs []RecordedRequest
}

func (l *requestLog) add(r RecordedRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.reqs) >= l.max {
		l.reqs = append(l.reqs[:0], l.reqs[1:]...)
	}
	l.reqs = append(l.reqs, r)
}

// Requests returns every request received so far (the most recent 4096),
// oldest first, including DERP and latency-check requests.
func (d *Deployment) Requests() []RecordedRequest {
	d.reqs.mu.Lock()
	defer d.reqs.mu.Unlock()
	out := make([]RecordedRequest, len(d.reqs.reqs))
	for i, r := range d.reqs.reqs {
		r.Header = r.Header.Clone()
		out[i] = r
	}
	return out
}

// RequestsTo returns the recorded requests whose path is exactly path.
func (d *Deployment) RequestsTo(path string) []RecordedRequest {
	var out []RecordedRequest
	for _, r := range d.Requests() {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func (d *Deployment) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.reqs.add(RecordedRequest{
			Time:     time.Now(),
			Method:   r.Method,
			Path:     r.URL.Path,
			RawQuery: r.URL.RawQuery,
			Header:   r.Header.Clone(),
		})
		next.ServeHTTP(w, r)
	})
}

// randomToken makes a token shaped like coderd's API keys: a 10-character id,
// a dash and a 22-character secret.
func randomToken() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	pick := func(n int) (string, error) {
		b := make([]byte, n)
		for i := range b {
			v, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
			if err != nil {
				return "", err
			}
			b[i] = alphabet[v.Int64()]
		}
		return string(b), nil
	}
	id, err := pick(10)
	if err != nil {
		return "", err
	}
	secret, err := pick(22)
	if err != nil {
		return "", err
	}
	return id + "-" + secret, nil
}
