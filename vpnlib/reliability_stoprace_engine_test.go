package vpnlib_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tailscale/wireguard-go/tun"
	"google.golang.org/protobuf/proto"
	"tailscale.com/wgengine/router"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
)

// raceBusy says what the engine keeps doing while it runs.
type raceBusy struct {
	logs     bool // log as fast as it can
	settings bool // push new router settings, one after another
}

// raceEngine is fakeEngine kept busy: it logs, pushes settings, and takes a
// moment over each Rebind; it notes any call made into it after Close.
type raceEngine struct {
	*fakeEngine
	busy      raceBusy
	rebinding chan struct{} // a Rebind has begun

	stop   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool

	mu   sync.Mutex
	errs []string
}

func (e *raceEngine) start(opts *tailnet.Options) (vpnlib.Engine, error) {
	inner, err := startFakeEngine(&steps{})(opts)
	if err != nil {
		return nil, err
	}
	e.fakeEngine = inner.(*fakeEngine)
	e.stop = make(chan struct{})
	if e.busy.logs {
		e.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-e.stop:
					return
				default:
				}
				opts.Logger.Info(context.Background(), "engine log storm", slog.F("i", i))
			}
		})
	}
	if e.busy.settings {
		e.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-e.stop:
					return
				default:
				}
				routes := []netip.Prefix{tailnet.CoderServicePrefix.AsNetip()}
				if i%2 == 1 {
					routes = append(routes, raceExtraRoute)
				}
				// Blocks until the host answers or the tunnel shuts its
				// settings down.
				_ = opts.Router.Set(&router.Config{LocalAddrs: opts.Addresses, Routes: routes})
			}
		})
	}
	return e, nil
}

func (e *raceEngine) note(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, fmt.Sprintf(format, args...))
}

func (e *raceEngine) problems() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.errs...)
}

// Rebind takes a moment, as the real one does (new sockets, a STUN).
func (e *raceEngine) Rebind() {
	if e.closed.Load() {
		e.note("Rebind on a closed engine")
	}
	select {
	case e.rebinding <- struct{}{}:
	default:
	}
	deadline := time.Now().Add(time.Millisecond)
	for time.Now().Before(deadline) && !e.closed.Load() {
		select {
		case <-e.stop:
			return
		default:
		}
	}
}

func (e *raceEngine) waitRebinding(m *raceManager) {
	m.t.Helper()
	select {
	case <-e.rebinding:
	case <-m.ctx.Done():
		m.t.Fatal("the Wake never reached the engine's Rebind")
	}
}

func (e *raceEngine) Close() error {
	if e.closed.Swap(true) {
		e.note("the engine closed twice")
	}
	close(e.stop)
	e.wg.Wait()
	return e.fakeEngine.Close()
}

// raceExtraRoute is a second route the busy engine adds and removes.
var raceExtraRoute = netip.MustParsePrefix("fd60:627a:a42b:1::/64")

// appendFrame appends msg as one CoderVPN frame.
func appendFrame(t *testing.T, buf []byte, msg *vpnpb.ManagerMessage) []byte {
	t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(b)))
	return append(buf, b...)
}

// nullDevice is a tunnel device that carries nothing: the busy engine
// never reads or writes it, and Close ends its event channel.
type nullDevice struct {
	events chan tun.Event
	once   sync.Once
}

func newNullDevice() *nullDevice { return &nullDevice{events: make(chan tun.Event)} }

func (*nullDevice) File() *os.File                         { return nil }
func (*nullDevice) Read([][]byte, []int, int) (int, error) { return 0, os.ErrClosed }
func (*nullDevice) Write(b [][]byte, _ int) (int, error)   { return len(b), nil }
func (*nullDevice) MTU() (int, error)                      { return 1280, nil }
func (*nullDevice) Name() (string, error)                  { return "null", nil }
func (d *nullDevice) Events() <-chan tun.Event             { return d.events }
func (*nullDevice) BatchSize() int                         { return 1 }
func (d *nullDevice) Close() error {
	d.once.Do(func() { close(d.events) })
	return nil
}

// readFrame reads one TunnelMessage frame; a clean end between frames is
// exactly io.EOF.
func readFrame(r io.Reader) (*vpnpb.TunnelMessage, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("the stream ended inside a frame: %w", io.ErrUnexpectedEOF)
	}
	m := &vpnpb.TunnelMessage{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("undecodable frame: %w", err)
	}
	return m, nil
}

// frameKind names what m carries.
func frameKind(m *vpnpb.TunnelMessage) string {
	return fmt.Sprintf("%T (response_to %d)", m.GetMsg(), m.GetRpc().GetResponseTo())
}
