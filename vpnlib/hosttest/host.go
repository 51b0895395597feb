package hosttest

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/codervpn/codervpn/internal/netstack"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/manager"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// Options configures a Host. The zero value is a well-behaved Coder Desktop:
// it speaks the current protocol version and accepts valid network settings.
type Options struct {
	// RefuseSettings, when not empty, makes the manager answer every
	// NetworkSettingsRequest with success=false and this error_message, as a
	// NetworkExtension does when setTunnelNetworkSettings fails.
	RefuseSettings string
	// IgnoreSettings makes the manager never answer NetworkSettingsRequests,
	// so that the tunnel's timeout on that RPC can be tested.
	IgnoreSettings bool
	// Versions are the protocol versions the manager offers in the handshake;
	// empty means speaker.CurrentVersion. Use an older list to play an older
	// Coder Desktop.
	Versions []speaker.Version
	// SendTunFD makes Start put the tunnel end of the utun socketpair into
	// StartRequest.tunnel_file_descriptor, as Coder Desktop does. The fd
	// number is only meaningful to a tunnel in this process.
	SendTunFD bool
	// LogTunnelLogs copies every Log message from the tunnel to t.Logf.
	LogTunnelLogs bool
	// MergeSettings keeps what a NetworkSettingsRequest leaves out: one
	// without IPv4 and IPv6 settings keeps the addresses and routes applied
	// before, one without DNS settings keeps the DNS. Coder's own tunnel
	// (the bench's baseline) sends its routes and its DNS in separate
	// requests; ours sends every setting in each.
	MergeSettings bool
}

// Host is the manager and the operating system of one CoderVPN session, in
// process. Make one with New; its methods are safe for concurrent use.
type Host struct {
	t    testing.TB
	opts Options
	net  *Netstack

	// The tunnel's ends, held until Close (or CloseTunnelEnds).
	tunSock, tunR, tunW *os.File
	tunFD               int
	// The manager's ends: it reads tunnel→manager from mgrR and writes
	// manager→tunnel to mgrW.
	mgrR, mgrW *os.File

	mu          sync.Mutex
	sess        *manager.Session
	connecting  bool
	settings    []*vpnpb.NetworkSettingsRequest
	applied     *NetConfig
	logs        []*vpnpb.Log
	peerUpdates []*vpnpb.PeerUpdate
	peers       *PeerState
	violations  []error
	changed     chan struct{} // closed and replaced whenever anything above changes
	closed      bool

	closeOnce sync.Once
}

// New makes the utun socketpair, the two pipes and the host's network stack.
// It starts no tunnel and does not connect: hand the tunnel TunnelFiles or
// TunnelFDs, start it, then call Connect. Close is registered with t.Cleanup.
func New(t testing.TB, opts Options) *Host {
	t.Helper()
	h, err := newHost(t, opts)
	if err != nil {
		t.Fatalf("hosttest.New: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

func newHost(t testing.TB, opts Options) (*Host, error) {
	ns, tunSock, err := netstack.NewSocketpair(netstack.InitialMTU)
	if err != nil {
		return nil, fmt.Errorf("the host's network stack: %w", err)
	}
	// Manager→tunnel and tunnel→manager pipes. os.Pipe makes non-blocking,
	// poller-backed files, so Close unblocks a pending Read or Write.
	tunR, mgrW, err := os.Pipe()
	if err != nil {
		ns.Close()
		tunSock.Close()
		return nil, fmt.Errorf("create the manager→tunnel pipe: %w", err)
	}
	mgrR, tunW, err := os.Pipe()
	if err != nil {
		ns.Close()
		tunSock.Close()
		tunR.Close()
		mgrW.Close()
		return nil, fmt.Errorf("create the tunnel→manager pipe: %w", err)
	}
	peers, _ := NewPeerState()
	return &Host{
		t:       t,
		opts:    opts,
		net:     ns,
		tunSock: tunSock,
		tunFD:   int(tunSock.Fd()), // already blocking: Fd changes nothing
		tunR:    tunR,
		tunW:    tunW,
		mgrR:    mgrR,
		mgrW:    mgrW,
		peers:   peers,
		changed: make(chan struct{}),
	}, nil
}

// TunnelFiles returns the tunnel's ends as files, for a tunnel in this
// process (vpnlib.TunnelConfig) or a child process (exec.Cmd.ExtraFiles):
// tun is the utun end of the socketpair (blocking), read the end the tunnel
// reads ManagerMessages from, write the end it writes TunnelMessages to (both
// non-blocking pipe ends, so a reader in this process can be unblocked by
// Close). The Host keeps them and closes them in Close; a tunnel that takes
// ownership may close them too (closing an *os.File twice is harmless), but
// must not close their fd numbers behind the files' backs.
func (h *Host) TunnelFiles() (tun, read, write *os.File) {
	return h.tunSock, h.tunR, h.tunW
}

// TunnelFDs returns the fd numbers of TunnelFiles, for APIs that take ints:
// coderStartVPN(tun_fd, read_fd, write_fd) and the daemon's --*-fd flags. The
// callee is expected to dup them, as the C ABI does; call CloseTunnelEnds
// afterwards so that the Host sees EOF when the tunnel closes its side. Note
// that this puts the two pipe ends into blocking mode (os.File.Fd does).
func (h *Host) TunnelFDs() (tun, read, write int) {
	return h.tunFD, int(h.tunR.Fd()), int(h.tunW.Fd())
}

// CloseTunnelEnds closes the Host's copies of the tunnel's ends. A tunnel
// that dup'd them (the C ABI, a child process) keeps working; without this
// the Host's own copy of the tunnel→manager write end would keep that pipe
// open, and the Host would never read EOF from a tunnel that stopped.
func (h *Host) CloseTunnelEnds() {
	h.tunSock.Close()
	h.tunR.Close()
	h.tunW.Close()
}

// Netstack is the host's network stack, for what DialTCP and LookupAAAA do
// not cover (listening, UDP, statistics).
func (h *Host) Netstack() *Netstack { return h.net }

// HangUp closes the manager's ends of both pipes, as when the host process
// dies: the tunnel reads EOF and its writes fail. Pending calls fail.
func (h *Host) HangUp() {
	h.mu.Lock()
	s := h.sess
	h.mu.Unlock()
	if s != nil {
		s.Close()
	}
	h.mgrR.Close()
	h.mgrW.Close()
}

// Close hangs up, shuts the network stack down, closes every fd the Host
// made and waits for every goroutine it started. It is idempotent and is
// registered with t.Cleanup by New.
func (h *Host) Close() {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		h.HangUp()
		h.net.Close()
		h.CloseTunnelEnds()
		h.mu.Lock()
		h.notifyLocked()
		h.mu.Unlock()
	})
}

// notifyLocked wakes every Wait* call to re-check its condition.
func (h *Host) notifyLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// violate records something the tunnel did that a manager would not accept.
func (h *Host) violate(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.violations = append(h.violations, fmt.Errorf(format, args...))
	h.notifyLocked()
}

// Violations lists what the tunnel sent that a manager would reject or not
// expect: requests other than NetworkSettings, one-way messages other than
// Log and PeerUpdate, PeerUpdates with malformed ids. A test that drives a
// healthy session should assert it is empty.
func (h *Host) Violations() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.violations...)
}
