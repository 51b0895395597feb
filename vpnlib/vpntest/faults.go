package vpntest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
)

// This file holds the faults a test can inject into a running deployment, to
// prove that clients survive what production deployments do to them: the
// coordinator and the relay restarting, an agent process restarting.
// DropControlConnections (control.go) and Proxy (proxy.go) are the others.

// closing reports whether Close has begun; restarts then have nothing to do.
func (d *Deployment) closing() bool {
	d.handlerMu.Lock()
	defer d.handlerMu.Unlock()
	return d.handlerClosed
}

// RestartCoordinator replaces the coordinator with a fresh one, as a coderd
// restart (or a failover to another replica) does: every peer's coordination
// ends, clients reconnect their control connection, agents coordinate again,
// and the new coordinator learns every node from scratch. The DERP relay,
// the resume-token key and the workspace state survive. Once it returns, new
// coordination goes to the new coordinator and the old one is closed.
func (d *Deployment) RestartCoordinator() error {
	d.restartMu.Lock()
	defer d.restartMu.Unlock()
	if d.closing() {
		return errClosed
	}
	fresh := tailnet.NewCoordinator(d.logger.Named("coord"))
	old := d.coordPtr.Swap(&fresh)
	if err := (*old).Close(); err != nil {
		return fmt.Errorf("close the old coordinator: %w", err)
	}
	return nil
}

// RestartDERP replaces the DERP relay with a fresh server under the same key,
// as a restart of coderd's embedded relay does: every DERP connection (plain
// or websocket) is closed and the new server knows no client until it
// reconnects. The control plane is untouched.
func (d *Deployment) RestartDERP() error {
	d.restartMu.Lock()
	defer d.restartMu.Unlock()
	if d.closing() {
		return errClosed
	}
	old := d.relay.Swap(d.newRelay())
	if err := old.close(); err != nil {
		return fmt.Errorf("close the old DERP server: %w", err)
	}
	return nil
}

// RestartAgent stops the agent with id and starts a new one with the same id
// and name, as an agent process restart does: a new tailnet node (new keys
// and endpoints) under the same identity and addresses. The agent stays
// listed throughout, so clients learn of the restart through coordination
// only; no workspace update is sent. It returns the new agent once it is
// ready. If the new agent cannot start, the old one stays listed, offline.
func (d *Deployment) RestartAgent(ctx context.Context, id uuid.UUID) (*Agent, error) {
	s := d.state
	s.mu.Lock()
	old, ok := s.agents[id]
	if !ok || s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("restart agent %s: no such agent", id)
	}
	if _, busy := s.pending[id]; busy {
		s.mu.Unlock()
		return nil, fmt.Errorf("restart agent %s: it is being started already", id)
	}
	w, err := s.workspaceLocked(old.WorkspaceID)
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("restart agent %s: %w", id, err)
	}
	s.pending[id] = struct{}{}
	wsName := w.Name
	s.mu.Unlock()

	closeErr := old.Close()
	fresh, err := d.startAgent(ctx, old.WorkspaceID, wsName, id, old.Name)

	s.mu.Lock()
	delete(s.pending, id)
	if err == nil && (s.closed || s.agents[id] != old) {
		err = errors.New("the agent was removed or the deployment closed meanwhile")
	}
	if err != nil {
		s.mu.Unlock()
		if fresh != nil {
			_ = fresh.Close()
		}
		return nil, fmt.Errorf("restart agent %s: %w", id, errors.Join(err, closeErr))
	}
	s.agents[id] = fresh
	if w, ok := s.workspaces[old.WorkspaceID]; ok {
		w.agents[id] = fresh
	}
	s.mu.Unlock()
	if closeErr != nil {
		return fresh, fmt.Errorf("restart agent %s: stop the old agent: %w", id, closeErr)
	}
	return fresh, nil
}

// resumeTokens counts what the resume-token provider does, so a test can
// tell that a reconnecting client presented a token and the deployment took
// it (the client then keeps its peer id on the coordinator).
type resumeTokens struct {
	tailnet.ResumeTokenProvider
	issued, accepted atomic.Int64
}

func (r *resumeTokens) GenerateResumeToken(ctx context.Context, peerID uuid.UUID) (*tailnetproto.RefreshResumeTokenResponse, error) {
	resp, err := r.ResumeTokenProvider.GenerateResumeToken(ctx, peerID)
	if err == nil {
		r.issued.Add(1)
	}
	return resp, err
}

func (r *resumeTokens) VerifyResumeToken(ctx context.Context, token string) (uuid.UUID, error) {
	id, err := r.ResumeTokenProvider.VerifyResumeToken(ctx, token)
	if err == nil {
		r.accepted.Add(1)
	}
	return id, err
}

// ResumeTokensIssued is how many resume tokens the deployment has handed
// out (clients refresh theirs on every control connection).
func (d *Deployment) ResumeTokensIssued() int { return int(d.resumeToken.issued.Load()) }

// ResumeTokensAccepted is how many control connections presented a valid
// resume token.
func (d *Deployment) ResumeTokensAccepted() int { return int(d.resumeToken.accepted.Load()) }
