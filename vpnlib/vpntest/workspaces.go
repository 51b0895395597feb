package vpntest

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
)

func validStatus(status codersdk.WorkspaceStatus) error {
	if tailnet.WorkspaceStatusToProto(status) == tailnetproto.Workspace_UNKNOWN {
		return fmt.Errorf("unknown workspace status %q (use a codersdk.WorkspaceStatus* constant)", status)
	}
	return nil
}

// AddWorkspace adds a workspace of the owner, without agents, and sends the
// upsert to every WorkspaceUpdates subscriber. Names follow coderd's rules
// (codersdk.NameValid) and are unique per owner.
func (d *Deployment) AddWorkspace(name string, status codersdk.WorkspaceStatus) (*Workspace, error) {
	if err := codersdk.NameValid(name); err != nil {
		return nil, fmt.Errorf("workspace name %q: %w", name, err)
	}
	if err := validStatus(status); err != nil {
		return nil, err
	}
	s := d.state
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	for _, w := range s.workspaces {
		if w.Name == name {
			return nil, fmt.Errorf("workspace %q already exists (id %s)", name, w.ID)
		}
	}
	w := &workspaceRecord{
		Workspace: Workspace{ID: uuid.New(), Name: name, Status: status},
		agents:    map[uuid.UUID]*Agent{},
	}
	s.workspaces[w.ID] = w
	u := emptyUpdate()
	u.UpsertedWorkspaces = append(u.UpsertedWorkspaces, w.proto())
	s.publishLocked(u)
	ws := w.Workspace
	return &ws, nil
}

// SetWorkspaceStatus changes a workspace's status and sends the upsert. It
// does not touch the workspace's agents: a test that wants "stopped means no
// agents" removes them too, as a real stop build would.
func (d *Deployment) SetWorkspaceStatus(id uuid.UUID, status codersdk.WorkspaceStatus) error {
	if err := validStatus(status); err != nil {
		return err
	}
	return d.changeWorkspace(id, func(w *workspaceRecord) { w.Status = status })
}

// RenameWorkspace changes a workspace's name (and so its agents' DNS names)
// and sends the upsert.
func (d *Deployment) RenameWorkspace(id uuid.UUID, name string) error {
	if err := codersdk.NameValid(name); err != nil {
		return fmt.Errorf("workspace name %q: %w", name, err)
	}
	return d.changeWorkspace(id, func(w *workspaceRecord) { w.Name = name })
}

func (d *Deployment) changeWorkspace(id uuid.UUID, change func(*workspaceRecord)) error {
	s := d.state
	s.mu.Lock()
	defer s.mu.Unlock()
	w, err := s.workspaceLocked(id)
	if err != nil {
		return err
	}
	change(w)
	u := emptyUpdate()
	u.UpsertedWorkspaces = append(u.UpsertedWorkspaces, w.proto())
	s.publishLocked(u)
	return nil
}

// RemoveWorkspace deletes a workspace: one update deletes its agents and the
// workspace, then its agents are stopped.
func (d *Deployment) RemoveWorkspace(id uuid.UUID) error {
	s := d.state
	s.mu.Lock()
	w, err := s.workspaceLocked(id)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	u := emptyUpdate()
	agents := w.sortedAgents()
	for _, a := range agents {
		u.DeletedAgents = append(u.DeletedAgents, a.proto())
		delete(s.agents, a.ID)
	}
	u.DeletedWorkspaces = append(u.DeletedWorkspaces, w.proto())
	delete(s.workspaces, id)
	s.publishLocked(u)
	s.mu.Unlock()

	var errs []error
	for _, a := range agents {
		if err := a.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stop agent %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Workspaces lists the owner's workspaces, sorted by name.
func (d *Deployment) Workspaces() []Workspace {
	s := d.state
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Workspace, 0, len(s.workspaces))
	for _, w := range s.workspaces {
		out = append(out, w.Workspace)
	}
	sortWorkspaces(out)
	return out
}

// AddAgent starts a simulated agent with a random id in the workspace; see
// AddAgentWithID.
func (d *Deployment) AddAgent(ctx context.Context, workspaceID uuid.UUID, name string) (*Agent, error) {
	return d.AddAgentWithID(ctx, workspaceID, uuid.New(), name)
}

// AddAgentWithID starts a real tailnet agent with the given id (so a test can
// bring an agent "back" under the id it had), waits until it has a DERP home
// and has told the coordinator its node, then lists it in the workspace and
// sends the upsert. Names follow codersdk.NameValid and are unique within a
// workspace.
func (d *Deployment) AddAgentWithID(ctx context.Context, workspaceID, id uuid.UUID, name string) (*Agent, error) {
	return d.addAgent(ctx, workspaceID, id, name, d.startAgent)
}

// agentStarter brings up an agent (a real one, or a stub) before it is listed.
type agentStarter func(ctx context.Context, workspaceID uuid.UUID, workspaceName string, id uuid.UUID, name string) (*Agent, error)

// addAgent starts an agent with start, then lists it in its workspace and
// sends the upsert; the checks are made before and again after the start.
func (d *Deployment) addAgent(ctx context.Context, workspaceID, id uuid.UUID, name string, start agentStarter) (*Agent, error) {
	if err := codersdk.NameValid(name); err != nil {
		return nil, fmt.Errorf("agent name %q: %w", name, err)
	}
	if id == uuid.Nil {
		return nil, errors.New("agent id must not be the nil UUID")
	}
	s := d.state
	s.mu.Lock()
	w, err := s.workspaceLocked(workspaceID)
	if err == nil {
		err = checkAgentFreeLocked(s, w, id, name)
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.pending[id] = struct{}{}
	wsName := w.Name
	s.mu.Unlock()

	a, err := start(ctx, workspaceID, wsName, id, name)

	s.mu.Lock()
	delete(s.pending, id)
	if err == nil {
		w, err = s.workspaceLocked(workspaceID)
		if err == nil {
			err = checkAgentFreeLocked(s, w, id, name)
		}
		if err == nil {
			w.agents[id] = a
			s.agents[id] = a
			u := emptyUpdate()
			u.UpsertedAgents = append(u.UpsertedAgents, a.proto())
			s.publishLocked(u)
			s.mu.Unlock()
			return a, nil
		}
	}
	s.mu.Unlock()
	if a != nil {
		_ = a.Close()
	}
	return nil, fmt.Errorf("add agent %q to workspace %s: %w", name, workspaceID, err)
}

func checkAgentFreeLocked(s *state, w *workspaceRecord, id uuid.UUID, name string) error {
	if _, ok := s.agents[id]; ok {
		return fmt.Errorf("agent %s already exists", id)
	}
	if _, ok := s.pending[id]; ok {
		return fmt.Errorf("agent %s is already being added", id)
	}
	for _, a := range w.agents {
		if a.Name == name {
			return fmt.Errorf("workspace %q already has an agent named %q", w.Name, name)
		}
	}
	return nil
}

// RemoveAgent removes an agent from its workspace, sends the deletion, and
// stops the agent.
func (d *Deployment) RemoveAgent(id uuid.UUID) error {
	s := d.state
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	a, ok := s.agents[id]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("agent %s does not exist", id)
	}
	delete(s.agents, id)
	if w, ok := s.workspaces[a.WorkspaceID]; ok {
		delete(w.agents, id)
	}
	u := emptyUpdate()
	u.DeletedAgents = append(u.DeletedAgents, a.proto())
	s.publishLocked(u)
	s.mu.Unlock()
	if err := a.Close(); err != nil {
		return fmt.Errorf("stop agent %s: %w", a.Name, err)
	}
	return nil
}

// Agents lists every agent the deployment lists, sorted by workspace then
// agent name.
func (d *Deployment) Agents() []*Agent {
	s := d.state
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Agent
	ws := make([]Workspace, 0, len(s.workspaces))
	for _, w := range s.workspaces {
		ws = append(ws, w.Workspace)
	}
	sortWorkspaces(ws)
	for _, w := range ws {
		out = append(out, s.workspaces[w.ID].sortedAgents()...)
	}
	return out
}

// AddRunningAgent adds a running workspace named workspace with one agent
// named agent, the world most tests start from, and returns the agent (its
// WorkspaceID names the workspace).
func (d *Deployment) AddRunningAgent(ctx context.Context, workspace, agent string) (*Agent, error) {
	ws, err := d.AddWorkspace(workspace, codersdk.WorkspaceStatusRunning)
	if err != nil {
		return nil, err
	}
	return d.AddAgent(ctx, ws.ID, agent)
}
