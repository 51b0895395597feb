package vpnlib

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdslog "log/slog"
	"sync"
	"time"

	"github.com/tailscale/wireguard-go/tun"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"

	"github.com/codervpn/codervpn/internal/progress"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/tunfd"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// tunBatch is how many packets the engine takes from the tunnel device per
// read. With one, every packet is a separate trip through WireGuard's
// queues; with a batch, what the host queued meanwhile is encrypted and sent
// together (sendmmsg). Measured by `make bench` (bench/RESULTS.md): a TCP
// stream through the tunnel went from 0.88 to ~1.3 times the engine-alone
// baseline with 8; 16 and 32 gained nothing more, and each slot costs the
// engine a 64 KiB buffer.
const tunBatch = 8

// Defaults for TunnelConfig.
const (
	DefaultStartTimeout     = 30 * time.Second
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultSettingsTimeout  = 10 * time.Second
)

// TunnelConfig configures one tunnel session. Zero durations take the
// defaults above.
type TunnelConfig struct {
	// TunFD is the tunnel device fd. -1 means "use
	// StartRequest.tunnel_file_descriptor" (what Coder Desktop sends); a
	// non-negative value wins over the request. It is never closed by the
	// tunnel: the device works on a dup. Beware the zero value: 0 means fd 0,
	// so set -1 explicitly when the request carries the fd.
	TunFD int
	// RPCRead carries ManagerMessages to us, RPCWrite TunnelMessages to the
	// manager. The tunnel owns both from NewTunnel on and closes them.
	RPCRead  io.ReadCloser
	RPCWrite io.WriteCloser
	// StartTimeout bounds a whole Start, from the request to the reply.
	StartTimeout time.Duration
	// HandshakeTimeout bounds the wait for the manager's handshake line.
	HandshakeTimeout time.Duration
	// SettingsTimeout bounds each NetworkSettingsRequest we send.
	SettingsTimeout time.Duration
	// WriteTimeout is how long a message to the manager may make no progress
	// (a manager that stopped reading) before the session ends with an error
	// wrapping speaker.ErrWriteTimeout; zero means DefaultWriteTimeout. It is what
	// keeps the engine's callbacks, which send PeerUpdates, from blocking
	// for ever.
	WriteTimeout time.Duration
	// PingInterval is how often agents are pinged and their status sent;
	// zero means DefaultPingInterval.
	PingInterval time.Duration
	// Logger is an optional local copy of the logs (the CLI's stderr). Logs
	// always go to the manager as Log messages as well. Both copies are
	// redacted: the API token and header values never appear.
	Logger slog.Logger
	// LogLevel is the lowest level logged, for both copies. The zero value
	// is slog.LevelDebug: the engine logs everything at debug.
	LogLevel slog.Level
	// LogQueue is how many Log messages may wait for the manager before new
	// ones are dropped and counted; zero means DefaultLogQueue.
	LogQueue int
	// TLSConfig, if set, is used for every connection to the deployment
	// (REST, control websocket, DERP): a private CA, for instance.
	TLSConfig *tls.Config
	// OpenTun opens the tunnel device for fd; nil means tunfd.OpenDevice with
	// tunfd.TunnelMTU. Tests use it to count or fail device opens.
	OpenTun func(fd int) (tun.Device, error)

	// newEngine starts the tailnet engine; nil means startTailnet. Tests
	// of this package hand in a fake.
	newEngine func(*tailnet.Options) (engine, error)
	// resolveHost resolves the deployment's hosts for exclude.go; nil means
	// the system resolver. Tests hand in their own.
	resolveHost hostResolver
}

func (c *TunnelConfig) setDefaults() {
	if c.StartTimeout <= 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.SettingsTimeout <= 0 {
		c.SettingsTimeout = DefaultSettingsTimeout
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.newEngine == nil {
		c.newEngine = startTailnet
	}
	if c.resolveHost == nil {
		c.resolveHost = defaultResolver
	}
	if c.OpenTun == nil {
		c.OpenTun = func(fd int) (tun.Device, error) {
			return tunfd.OpenDevice(fd, tunfd.Options{MTU: tunfd.TunnelMTU, BatchSize: tunBatch})
		}
	}
}

// Tunnel is the tunnel side of one CoderVPN session: it serves the manager's
// requests over the pipes and, once started, runs the tailnet engine over
// the host's tunnel device. Make one with NewTunnel; it runs until the
// manager stops it, hangs up, or Close is called.
type Tunnel struct {
	cfg      TunnelConfig
	redactor *redactor
	logs     *logForwarder
	sink     *tunnelSink // the manager's copy and the local one, formatted once
	logger   slog.Logger // to the manager and the local logger, redacted

	ctx     context.Context // canceled by Close and at the end of the session
	cancel  context.CancelFunc
	done    chan struct{}
	ending  chan struct{} // closed once to make run tear the session down
	endOnce sync.Once

	control chan *vpnpb.ManagerMessage // Start and Stop, in order
	queries chan *vpnpb.ManagerMessage // GetPeerUpdate, Wake and kinds we do not serve
	// queriesIn counts the requests handed to queries, queriesOut those
	// the query loop has answered: a Stop waits for the second to reach
	// the first, so that no reply trails the StopResponse.
	queriesIn, queriesOut progress.Count

	mu          sync.Mutex
	speaker     *speaker.Tunnel
	state       tunnelState
	session     *session
	startCancel context.CancelCauseFunc // set while a Start runs
	err         error
}

type tunnelState int

const (
	stateIdle tunnelState = iota
	stateStarting
	stateRunning
	stateStopped
)

// errStoppedDuringStart is the cause given to a Start interrupted by Stop,
// Close or the manager hanging up. To what it interrupts (a request to the
// deployment, say) it is a cancellation: it matches context.Canceled.
var errStoppedDuringStart error = stoppedDuringStart{}

type stoppedDuringStart struct{}

func (stoppedDuringStart) Error() string        { return "the tunnel was stopped while starting" }
func (stoppedDuringStart) Is(target error) bool { return target == context.Canceled }

// queueDepth bounds the requests waiting for their loop; beyond it the
// reading of requests waits (see onRequest).
const queueDepth = 64

// NewTunnel takes ownership of cfg.RPCRead and cfg.RPCWrite and returns at
// once; the handshake and everything after it run in the background. Done
// closes when the session is over.
func NewTunnel(cfg TunnelConfig) (*Tunnel, error) {
	if cfg.RPCRead == nil || cfg.RPCWrite == nil {
		for _, c := range []io.Closer{cfg.RPCRead, cfg.RPCWrite} {
			if c != nil {
				_ = c.Close()
			}
		}
		return nil, errors.New("TunnelConfig needs both RPCRead and RPCWrite")
	}
	cfg.setDefaults()
	r := &redactor{}
	logs := newLogForwarder(r, cfg.LogQueue)
	sink := newTunnelSink(logs, cfg.Logger)
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tunnel{
		cfg:      cfg,
		redactor: r,
		logs:     logs,
		sink:     sink,
		logger:   slog.Make(sink).Leveled(cfg.LogLevel).Named("vpn"),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		ending:   make(chan struct{}),
		control:  make(chan *vpnpb.ManagerMessage, queueDepth),
		queries:  make(chan *vpnpb.ManagerMessage, queueDepth),
	}
	go t.run()
	return t, nil
}

// Done is closed when the session has fully ended (the manager hung up or
// stopped us, or Close) and every goroutine, engine and fd is released.
func (t *Tunnel) Done() <-chan struct{} { return t.done }

// Err says why the session ended: nil after a clean Stop, Close, or the
// manager closing the pipe cleanly; otherwise the handshake or stream error.
func (t *Tunnel) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Close stops the engine and the controllers, closes the pipes and every fd
// the tunnel opened, and waits for all of its goroutines. It is what the C
// ABI's coderStopVPN calls; it is idempotent and safe from any goroutine.
func (t *Tunnel) Close() error {
	t.end()
	<-t.done
	return nil
}

// end asks run to tear the session down.
func (t *Tunnel) end() {
	t.endOnce.Do(func() {
		close(t.ending)
		t.cancel()
		t.abortStart()
	})
}

// abortStart interrupts a Start in progress, if any.
func (t *Tunnel) abortStart() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.startCancel != nil {
		t.startCancel(errStoppedDuringStart)
	}
}

func (t *Tunnel) setErr(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
	}
}

// run is the session's supervisor: handshake, serve, tear down.
func (t *Tunnel) run() {
	defer close(t.done)
	defer t.cancel()

	hsCtx, hsCancel := context.WithTimeout(t.ctx, t.cfg.HandshakeTimeout)
	sp, err := speaker.NewTunnel(hsCtx, t.cfg.RPCRead, t.cfg.RPCWrite, speaker.Options[*vpnpb.ManagerMessage]{
		OnRequest:    t.onRequest,
		OnMessage:    t.onMessage,
		WriteTimeout: t.cfg.WriteTimeout,
		Logger:       t.speakerLogger(),
	})
	hsCancel()
	if err != nil {
		t.setErr(err)
		// The manager never hears of this (there is no session to carry
		// it); the local logger (the C ABI's log callback, the CLI's
		// stderr) is where a host learns why its tunnel never answered.
		if errors.Is(err, context.Canceled) { // Close during the handshake
			t.logger.Info(t.ctx, "the tunnel was closed before the CoderVPN handshake")
		} else {
			t.logger.Error(t.ctx, "the CoderVPN handshake with the manager failed", slog.Error(err))
		}
		return
	}
	t.mu.Lock()
	t.speaker = sp
	t.mu.Unlock()
	t.logger.Info(t.ctx, "CoderVPN session open", slog.F("protocol_version", sp.Version().String()))

	var wg sync.WaitGroup
	stopLogs := make(chan struct{})
	wg.Go(func() { t.logs.run(stopLogs, t.sendLog) })
	wg.Go(t.controlLoop)
	wg.Go(t.queryLoop)

	select {
	case <-sp.Done():
		if err := sp.Err(); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, speaker.ErrClosed) {
			t.setErr(err)
		}
	case <-t.ending:
	}
	t.end()
	t.logEnd()
	// The speaker goes first: the manager has stopped us, hung up, or its
	// host called Close, and none of them waits for another message. A
	// write blocked on a pipe the host no longer reads (a PeerUpdate, a
	// Log, a NetworkSettings request, a reply) fails at once instead of
	// holding the teardown for the write timeout: the session's senders
	// hold locks that halting it takes (peerTracker.silence), and the
	// ping loop it waits for may be one of them.
	_ = sp.Close()
	// The control loop finishes what it is doing (a Start sees its context
	// canceled) and exits; then the engine goes.
	t.stopSession()
	close(stopLogs)
	wg.Wait()
}

// logEnd says why the session ended, to the local logger: by then the
// manager may not be listening (a hang-up, a write timeout), and a host
// reading its log callback otherwise never learns it.
func (t *Tunnel) logEnd() {
	if err := t.Err(); err != nil {
		t.logger.Warn(t.ctx, "the CoderVPN session ended", slog.Error(err))
		return
	}
	t.logger.Info(t.ctx, "the CoderVPN session ended")
}

// speakerLogger is the logger of the protocol engine: the local copy only
// (the speaker's own logs must not travel through the speaker), and none
// when the embedder has no logger.
func (t *Tunnel) speakerLogger() *stdslog.Logger {
	if t.sink.local == nil {
		return nil
	}
	return newStdlibLogger(localSink{logger: t.cfg.Logger, redactor: t.redactor}, t.cfg.LogLevel, "codervpn")
}

// onRequest runs on the speaker's read goroutine: it routes each request to
// the loop that serves it. Every request is answered, so a full queue is
// waited on rather than dropped: a burst (a GetPeerUpdate storm) then slows
// the reading of more requests instead of losing some.
func (t *Tunnel) onRequest(req *vpnpb.ManagerMessage) {
	q := t.queries // GetPeerUpdate, Wake, and kinds we do not serve
	switch req.GetMsg().(type) {
	case *vpnpb.ManagerMessage_Start:
		q = t.control
	case *vpnpb.ManagerMessage_Stop:
		// A Start in progress gives up at once rather than make the user
		// wait out its deadline.
		t.abortStart()
		q = t.control
	}
	if q == t.queries {
		t.queriesIn.Add(1)
	}
	select {
	case q <- req:
	case <-t.ctx.Done():
		if q == t.queries {
			t.queriesOut.Add(1) // never to be answered: the session is over
		}
	}
}

// onMessage handles one-way messages; the manager has none to send.
func (t *Tunnel) onMessage(msg *vpnpb.ManagerMessage) {
	t.logger.Warn(t.ctx, "ignoring a one-way message from the manager", slog.F("kind", fmt.Sprintf("%T", msg.GetMsg())))
}

func (t *Tunnel) sendLog(l *vpnpb.Log) error {
	sp := t.currentSpeaker()
	if sp == nil {
		return speaker.ErrClosed
	}
	return sp.Send(&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Log{Log: l}})
}

func (t *Tunnel) currentSpeaker() *speaker.Tunnel {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.speaker
}
