package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
	"google.golang.org/protobuf/proto"
)

// Reconnect backoff after a tunnel ended by itself.
const (
	retryMin = time.Second
	retryMax = 30 * time.Second
	// stopTimeout bounds a Stop.
	stopTimeout = 30 * time.Second
)

// tunnelLoop is the one goroutine that starts, stops and wakes the tunnel,
// so operations never overlap. It also notices a tunnel that ended by
// itself and reconnects with the kept login, backing off.
func (s *Server) tunnelLoop() {
	var (
		running Running
		ended   <-chan struct{}
		retry   <-chan time.Time
		backoff = retryMin
	)
	stop := func() error {
		if running == nil {
			return nil
		}
		s.setLifecycle(vpnpb.Status_STOPPING, "")
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		err := running.Stop(ctx)
		cancel()
		running, ended = nil, nil
		return err
	}
	start := func(req *vpnpb.StartRequest) error {
		s.setLifecycle(vpnpb.Status_STARTING, "")
		s.broadcast(&vpnpb.ServiceMessage{Msg: &vpnpb.ServiceMessage_StartProgress{
			StartProgress: &vpnpb.StartProgress{Stage: vpnpb.StartProgressStage_Initializing},
		}})
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StartTimeout)
		r, err := s.cfg.Backend.Start(ctx, req, Events{PeerUpdate: s.onPeerUpdate})
		cancel()
		if err != nil {
			msg := s.redact(err.Error())
			s.setLifecycle(vpnpb.Status_STOPPED, msg)
			return errors.New(msg)
		}
		running, ended = r, r.Done()
		backoff = retryMin
		s.setLifecycle(vpnpb.Status_STARTED, "")
		return nil
	}
	for {
		select {
		case o := <-s.ops:
			var err error
			switch o.kind {
			case "start":
				retry = nil
				// The tunnel never sees our private field.
				req := proto.CloneOf(o.start)
				req.Persist = false
				login := loginOf(req)
				s.mu.Lock()
				same := running != nil && s.login.equal(login)
				s.mu.Unlock()
				// Up with the login it runs with is already done (a second
				// `codervpn up` must not cut everyone's connections);
				// another login replaces the tunnel.
				if !same {
					if serr := stop(); serr != nil {
						s.log.Warn("stopping the previous tunnel", "error", s.redact(serr.Error()))
					}
					s.mu.Lock()
					s.login = login
					s.mu.Unlock()
					err = start(req)
				}
				if err != nil && o.retry {
					retry = time.After(backoff)
					backoff = min(2*backoff, retryMax)
				}
				if err == nil && s.cfg.StateDir != "" && !o.retry {
					// The client's latest choice wins: persist, or forget
					// what an earlier `up --persist` saved.
					if o.start.GetPersist() {
						err = saveLogin(s.cfg.StateDir, s.login)
					} else {
						err = deleteLogin(s.cfg.StateDir)
					}
					if err != nil {
						err = fmt.Errorf("connected, but %w", err)
					}
				}
			case "stop":
				retry = nil
				err = stop()
				s.mu.Lock()
				s.login = nil
				s.mu.Unlock()
				s.setLifecycle(vpnpb.Status_STOPPED, "")
				if s.cfg.StateDir != "" {
					err = errors.Join(err, deleteLogin(s.cfg.StateDir))
				}
			case "wake":
				if running != nil {
					ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
					err = running.Wake(ctx)
					cancel()
				}
			case "shutdown":
				retry = nil
				err = stop()
				s.setLifecycle(vpnpb.Status_STOPPED, "")
			}
			o.done <- err
		case <-ended:
			why := "the tunnel ended"
			if err := running.Err(); err != nil {
				why = fmt.Sprintf("the tunnel ended: %v", err)
			}
			s.log.Warn("tunnel ended by itself; reconnecting", "error", s.redact(why), "after", backoff)
			_ = stop() // removes the device and settings
			s.setLifecycle(vpnpb.Status_STOPPED, why+"; reconnecting")
			retry = time.After(backoff)
			backoff = min(2*backoff, retryMax)
		case <-retry:
			retry = nil
			s.mu.Lock()
			login := s.login
			s.mu.Unlock()
			if login == nil {
				continue
			}
			if err := start(login.request()); err != nil {
				s.log.Warn("reconnect failed", "error", err, "next", backoff)
				retry = time.After(backoff)
				backoff = min(2*backoff, retryMax)
			}
		case <-s.ctx.Done():
			_ = stop()
			return
		}
	}
}

// redact removes the kept login's secrets from s.
func (s *Server) redact(msg string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Redact(msg, s.login.secrets()...)
}

// Wake tells the running tunnel the machine resumed (a no-op when none
// runs).
func (s *Server) Wake() error { return s.do(op{kind: "wake"}) }
