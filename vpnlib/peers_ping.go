package vpnlib

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/google/uuid"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"
)

// DefaultPingInterval is how often the tunnel pings every agent and sends the
// manager their status (Coder Desktop shows latency and path from it).
const DefaultPingInterval = 5 * time.Second

// pingEngine is the part of the engine the ping loop uses.
type pingEngine interface {
	Ping(ctx context.Context, ip netip.Addr) (time.Duration, bool, *ipnstate.PingResult, error)
	Node() *tailnet.Node
	DERPMap() *tailcfg.DERPMap
}

// runPingLoop pings every known agent each interval, records the results, and
// sends the agents' status, until ctx ends. Each round is bounded by the
// interval, so a dead agent never delays the next status message.
func runPingLoop(ctx context.Context, p *peerTracker, eng pingEngine, interval time.Duration, logger slog.Logger) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		pingRound(ctx, p, eng, interval, logger)
		if ctx.Err() != nil {
			return
		}
		p.sendStatus()
	}
}

// pingRound pings all agents concurrently and waits for every ping.
//
// A round that the session's end cuts short neither starts the pings still
// to go nor logs the ones it cut: with thousands of agents a round is
// thousands of goroutines, each of which would otherwise still hand the
// engine a ping (and its own goroutine) and log a line, and the Stop would
// wait for all of it.
func pingRound(session context.Context, p *peerTracker, eng pingEngine, timeout time.Duration, logger slog.Logger) {
	ctx, cancel := context.WithTimeout(session, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, id := range p.agentIDs() {
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			if ctx.Err() != nil {
				return
			}
			ping, err := pingAgent(ctx, eng, id)
			if err != nil {
				if session.Err() == nil {
					logger.Debug(ctx, "ping agent failed", slog.F("agent_id", id), slog.Error(err))
				}
				return
			}
			p.recordPing(id, ping)
		})
	}
	wg.Wait()
}

func pingAgent(ctx context.Context, eng pingEngine, id uuid.UUID) (agentPing, error) {
	latency, p2p, result, err := eng.Ping(ctx, tailnet.CoderServicePrefix.AddrFromUUID(id))
	if err != nil {
		return agentPing{}, err
	}
	ping := agentPing{latency: latency, p2p: p2p}
	node, derpMap := eng.Node(), eng.DERPMap()
	if node == nil || derpMap == nil {
		return ping, nil
	}
	ping.derp = tailnet.ExtractPreferredDERPName(result, node, derpMap)
	if l, ok := tailnet.ExtractDERPLatency(node, derpMap)[ping.derp]; ok {
		ping.derpLatency = &l
	}
	return ping, nil
}
