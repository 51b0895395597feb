package vpntest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
)

// Workspace is a workspace of the deployment's owner, as added at run time.
type Workspace struct {
	ID     uuid.UUID
	Name   string
	Status codersdk.WorkspaceStatus
}

type workspaceRecord struct {
	Workspace
	agents map[uuid.UUID]*Agent
}

// state is the deployment's workspaces and agents. It is also the
// tailnet.WorkspaceUpdatesProvider behind the WorkspaceUpdates RPC: every
// change is turned into one proto.WorkspaceUpdate diff, queued for every
// subscriber in the order the changes happened.
type state struct {
	ownerID uuid.UUID
	created time.Time

	ctx    context.Context
	cancel context.CancelFunc
	pumps  sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	workspaces map[uuid.UUID]*workspaceRecord
	agents     map[uuid.UUID]*Agent
	// pending holds agent ids being started, so a second AddAgentWithID with
	// the same id fails instead of racing.
	pending map[uuid.UUID]struct{}
	subs    map[*subscription]struct{}
}

var _ tailnet.WorkspaceUpdatesProvider = (*state)(nil)

func newState(ownerID uuid.UUID) *state {
	ctx, cancel := context.WithCancel(context.Background())
	return &state{
		ownerID:    ownerID,
		created:    time.Now().UTC().Truncate(time.Second),
		ctx:        ctx,
		cancel:     cancel,
		workspaces: map[uuid.UUID]*workspaceRecord{},
		agents:     map[uuid.UUID]*Agent{},
		pending:    map[uuid.UUID]struct{}{},
		subs:       map[*subscription]struct{}{},
	}
}

var errClosed = errors.New("the deployment is closed")

// Subscribe implements tailnet.WorkspaceUpdatesProvider. The first update is a
// snapshot of every workspace and agent of userID (empty for anyone but the
// owner, as coderd shows no one else's workspaces), then one diff per change.
func (s *state) Subscribe(_ context.Context, userID uuid.UUID) (tailnet.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	snap := emptyUpdate()
	if userID == s.ownerID {
		snap = s.snapshotLocked()
	}
	ctx, cancel := context.WithCancel(s.ctx)
	sub := &subscription{
		ctx:    ctx,
		cancel: cancel,
		ch:     make(chan *tailnetproto.WorkspaceUpdate),
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
		queue:  []*tailnetproto.WorkspaceUpdate{snap},
		owner:  userID == s.ownerID,
		remove: func(sub *subscription) {
			s.mu.Lock()
			delete(s.subs, sub)
			s.mu.Unlock()
		},
	}
	s.subs[sub] = struct{}{}
	s.pumps.Add(1)
	go func() {
		defer s.pumps.Done()
		sub.pump()
	}()
	return sub, nil
}

// Close implements io.Closer for the provider: it ends every subscription.
func (s *state) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.pumps.Wait()
	return nil
}

// closeAll marks the state closed for changes and hands back every running
// agent so the deployment can stop them.
func (s *state) closeAll() []*Agent {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	out := make([]*Agent, 0, len(s.agents))
	for _, a := range s.agents {
		out = append(out, a)
	}
	s.agents = map[uuid.UUID]*Agent{}
	for _, w := range s.workspaces {
		w.agents = map[uuid.UUID]*Agent{}
	}
	return out
}

func (s *state) hasAgent(id uuid.UUID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.agents[id]
	return ok
}

func emptyUpdate() *tailnetproto.WorkspaceUpdate {
	return &tailnetproto.WorkspaceUpdate{
		UpsertedWorkspaces: []*tailnetproto.Workspace{},
		UpsertedAgents:     []*tailnetproto.Agent{},
		DeletedWorkspaces:  []*tailnetproto.Workspace{},
		DeletedAgents:      []*tailnetproto.Agent{},
	}
}

func (s *state) snapshotLocked() *tailnetproto.WorkspaceUpdate {
	u := emptyUpdate()
	ids := make([]uuid.UUID, 0, len(s.workspaces))
	for id := range s.workspaces {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return s.workspaces[ids[i]].Name < s.workspaces[ids[j]].Name })
	for _, id := range ids {
		w := s.workspaces[id]
		u.UpsertedWorkspaces = append(u.UpsertedWorkspaces, w.proto())
		for _, a := range w.sortedAgents() {
			u.UpsertedAgents = append(u.UpsertedAgents, a.proto())
		}
	}
	return u
}

// publishLocked queues u for every owner subscriber.
func (s *state) publishLocked(u *tailnetproto.WorkspaceUpdate) {
	for sub := range s.subs {
		if sub.owner {
			sub.push(u)
		}
	}
}

func (w *workspaceRecord) proto() *tailnetproto.Workspace {
	return &tailnetproto.Workspace{
		Id:     tailnet.UUIDToByteSlice(w.ID),
		Name:   w.Name,
		Status: tailnet.WorkspaceStatusToProto(w.Status),
	}
}

func (w *workspaceRecord) sortedAgents() []*Agent {
	out := make([]*Agent, 0, len(w.agents))
	for _, a := range w.agents {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (a *Agent) proto() *tailnetproto.Agent {
	return &tailnetproto.Agent{
		Id:          tailnet.UUIDToByteSlice(a.ID),
		Name:        a.Name,
		WorkspaceId: tailnet.UUIDToByteSlice(a.WorkspaceID),
	}
}

// subscription is one WorkspaceUpdates stream. Updates wait in an unbounded
// queue so a slow client never blocks a change (or another client); pump
// hands them to the RPC in order and closes ch when the subscription ends.
type subscription struct {
	ctx    context.Context
	cancel context.CancelFunc
	ch     chan *tailnetproto.WorkspaceUpdate
	notify chan struct{}
	done   chan struct{}
	owner  bool
	remove func(*subscription)

	mu    sync.Mutex
	queue []*tailnetproto.WorkspaceUpdate
}

func (sub *subscription) Updates() <-chan *tailnetproto.WorkspaceUpdate { return sub.ch }

func (sub *subscription) Close() error {
	sub.cancel()
	<-sub.done
	sub.remove(sub)
	return nil
}

func (sub *subscription) push(u *tailnetproto.WorkspaceUpdate) {
	sub.mu.Lock()
	sub.queue = append(sub.queue, u)
	sub.mu.Unlock()
	select {
	case sub.notify <- struct{}{}:
	default:
	}
}

func (sub *subscription) pump() {
	defer close(sub.done)
	defer close(sub.ch)
	for {
		sub.mu.Lock()
		var next *tailnetproto.WorkspaceUpdate
		if len(sub.queue) > 0 {
			next = sub.queue[0]
			sub.queue[0] = nil
			sub.queue = sub.queue[1:]
		}
		sub.mu.Unlock()
		if next != nil {
			select {
			case sub.ch <- next:
			case <-sub.ctx.Done():
				return
			}
			continue
		}
		select {
		case <-sub.notify:
		case <-sub.ctx.Done():
			return
		}
	}
}

func (s *state) workspaceLocked(id uuid.UUID) (*workspaceRecord, error) {
	if s.closed {
		return nil, errClosed
	}
	w, ok := s.workspaces[id]
	if !ok {
		return nil, fmt.Errorf("workspace %s does not exist", id)
	}
	return w, nil
}

func sortWorkspaces(ws []Workspace) {
	sort.Slice(ws, func(i, j int) bool { return ws[i].Name < ws[j].Name })
}
