package vpnlib

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailscale/wireguard-go/tun"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// FuzzTunnelRequests plays a manager that sends a Tunnel arbitrary valid
// ManagerMessages in arbitrary order: Stop before Start, GetPeerUpdate
// storms, requests the tunnel does not know (unknown oneofs), stray replies,
// one-way messages, reused ids, StartRequests with odd URLs, multi-megabyte
// tokens, huge header lists and absurd fd numbers. The deployment is absent
// (a closed port) or refuses everything (401). Nothing may panic or hang:
// every request gets a reply of the right kind, or the session ends cleanly
// (EOF on a frame boundary), and the tunnel ends once the manager hangs up.
// Seeds: testdata/fuzz/FuzzTunnelRequests; see fuzzScript for the encoding.
func FuzzTunnelRequests(f *testing.F) {
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"message":"You are signed out."}`)
	}))
	refusing.Config.ErrorLog = discardLog()
	f.Cleanup(refusing.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String()
	_ = ln.Close()
	choices := fuzzChoices{urls: []string{
		closedURL, refusing.URL, strings.Replace(refusing.URL, "http:", "https:", 1),
		"ftp://coder.example.com", "javascript:alert(1)", "http://[::1", "http://", "",
		"file:///etc/passwd", "unix:///var/run/coder.sock", "http://user:secret@" + ln.Addr().String(),
		"http://a b.example", "  " + refusing.URL + "/some/path?q=1#frag  ",
		"http://user:" + strings.Repeat("p", maxStartURLLen-40) + "@" + ln.Addr().String(),
	}}
	f.Fuzz(func(t *testing.T, data []byte) {
		runTunnelScript(t, fuzzScript(data, choices))
	})
}

type fuzzChoices struct{ urls []string }

// scripted is one frame the fuzzed manager writes, and the reply it is owed.
type scripted struct {
	frame []byte
	id    uint64 // msg_id of a request (0: no reply owed)
	want  string // the reply kind owed ("" for any)
}

// fuzzScript turns data into frames: each op byte (mod 10) picks a message,
// the bytes after it its parameters. Missing bytes read as zero.
func fuzzScript(data []byte, c fuzzChoices) []scripted {
	r := fuzzReader{data: data}
	var out []scripted
	var lastID uint64
	nextID := func() uint64 { lastID++; return lastID }
	add := func(m *vpnpb.ManagerMessage, want string, extra []byte) {
		id := m.GetRpc().GetMsgId()
		if m.GetRpc().GetResponseTo() != 0 {
			id = 0 // a reply, however odd: nothing is owed
		}
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		b = append(b, extra...)
		frame := make([]byte, 4, 4+len(b))
		frame[0], frame[1], frame[2], frame[3] = byte(len(b)>>24), byte(len(b)>>16), byte(len(b)>>8), byte(len(b))
		out = append(out, scripted{frame: append(frame, b...), id: id, want: want})
	}
	rpc := func() *vpnpb.RPC { return &vpnpb.RPC{MsgId: nextID()} }
	for len(out) < 40 && r.more() {
		switch r.byte() % 10 {
		case 0:
			add(&vpnpb.ManagerMessage{Rpc: rpc(), Msg: &vpnpb.ManagerMessage_Start{Start: fuzzStart(&r, c)}}, "TunnelMessage.start", nil)
		case 1:
			add(&vpnpb.ManagerMessage{Rpc: rpc(), Msg: &vpnpb.ManagerMessage_Stop{Stop: &vpnpb.StopRequest{}}}, "TunnelMessage.stop", nil)
		case 2:
			add(&vpnpb.ManagerMessage{Rpc: rpc(), Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}}, "TunnelMessage.peer_update", nil)
		case 3:
			add(&vpnpb.ManagerMessage{Rpc: rpc(), Msg: &vpnpb.ManagerMessage_Wake{Wake: &vpnpb.WakeRequest{}}}, "TunnelMessage.wake", nil)
		case 4: // a request whose kind this tunnel does not know: a newer manager's
			unknown := protowire.AppendTag(nil, protowire.Number(20+int(r.byte()%50)), protowire.BytesType)
			unknown = protowire.AppendBytes(unknown, []byte("from the future"))
			add(&vpnpb.ManagerMessage{Rpc: rpc()}, "", unknown)
		case 5: // a storm of GetPeerUpdate
			for n := 20 + int(r.byte()); n > 0; n-- {
				add(&vpnpb.ManagerMessage{Rpc: rpc(), Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}}, "TunnelMessage.peer_update", nil)
			}
		case 6: // one-way: the protocol has none from the manager
			add(&vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Stop{Stop: &vpnpb.StopRequest{}}}, "", nil)
		case 7: // a stray reply to a request the tunnel never made
			add(&vpnpb.ManagerMessage{Rpc: &vpnpb.RPC{MsgId: uint64(r.byte()), ResponseTo: uint64(r.byte()) + 1},
				Msg: &vpnpb.ManagerMessage_NetworkSettings{NetworkSettings: &vpnpb.NetworkSettingsResponse{Success: r.byte()%2 == 0}}}, "", nil)
		case 8: // a reused msg_id
			add(&vpnpb.ManagerMessage{Rpc: &vpnpb.RPC{MsgId: max(lastID, 1)}, Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}}, "TunnelMessage.peer_update", nil)
		case 9: // a NetworkSettings *request* from the manager: the wrong direction
			add(&vpnpb.ManagerMessage{Rpc: rpc(), Msg: &vpnpb.ManagerMessage_NetworkSettings{NetworkSettings: &vpnpb.NetworkSettingsResponse{}}}, "", nil)
		}
	}
	return out
}

func fuzzStart(r *fuzzReader, c fuzzChoices) *vpnpb.StartRequest {
	tokens := []string{"", "tok", "abcdefghij-0123456789012345678901", "line\nbreak",
		strings.Repeat("t", maxStartTokenLen), // the longest accepted: the redactor's worst case
		strings.Repeat("t", 1<<20), strings.Repeat("multi-megabyte-token-", 200_000)}
	fds := []int32{0, -1, 1, 2, 3, 1 << 20, math.MaxInt32, math.MinInt32}
	req := &vpnpb.StartRequest{
		CoderUrl:             c.urls[int(r.byte())%len(c.urls)],
		ApiToken:             tokens[int(r.byte())%len(tokens)],
		TunnelFileDescriptor: fds[int(r.byte())%len(fds)],
		DeviceId:             strings.Repeat("d", int(r.byte())),
		DeviceOs:             "fuzzOS",
	}
	switch r.byte() % 4 {
	case 1:
		req.Headers = []*vpnpb.StartRequest_Header{{Name: "X-A", Value: "1"}, {Name: "Bad Name", Value: "v"}}
	case 2: // a huge repeated header list
		for i := range 5000 {
			req.Headers = append(req.Headers, &vpnpb.StartRequest_Header{Name: "X-H-" + strconv.Itoa(i), Value: strings.Repeat("v", 100)})
		}
	case 3:
		req.Headers = []*vpnpb.StartRequest_Header{{Name: "X-Crlf", Value: "a\r\nInjected: yes"}}
	}
	return req
}

type fuzzReader struct {
	data []byte
	i    int
}

func (r *fuzzReader) more() bool { return r.i < len(r.data) }

func (r *fuzzReader) byte() byte {
	if r.i >= len(r.data) {
		return 0
	}
	r.i++
	return r.data[r.i-1]
}

// runTunnelScript starts a Tunnel on two pipes, handshakes as the manager,
// writes the script while reading every reply, and checks the replies.
func runTunnelScript(t *testing.T, script []scripted) {
	tunR, tunW, mgrR, mgrW := RPCPipes(t)
	defer mgrR.Close()
	defer mgrW.Close()
	tunnel, err := NewTunnel(TunnelConfig{
		TunFD: -1, RPCRead: tunR, RPCWrite: tunW,
		StartTimeout: 3 * time.Second, HandshakeTimeout: 3 * time.Second, SettingsTimeout: time.Second,
		OpenTun: func(int) (tun.Device, error) { return nil, errors.New("fuzz: no tunnel device") },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tunnel.Close()
	if _, err := io.WriteString(mgrW, "codervpn manager 1.3\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(mgrR)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "codervpn tunnel ") {
		t.Fatalf("read the tunnel's header: %q, %v", line, err)
	}

	var (
		mu      sync.Mutex
		replies = map[uint64][]string{}
		changed = make(chan struct{}, 1)
		ended   = make(chan error, 1)
	)
	go func() {
		for {
			m, err := readTunnelFrame(br)
			if err != nil {
				ended <- err
				return
			}
			if to := m.GetRpc().GetResponseTo(); to != 0 {
				mu.Lock()
				replies[to] = append(replies[to], tunnelKind(m))
				mu.Unlock()
				select {
				case changed <- struct{}{}:
				default:
				}
			} else if m.GetRpc().GetMsgId() != 0 {
				ended <- errors.New("the tunnel sent a request although no Start succeeded: " + tunnelKind(m))
				return
			}
		}
	}()

	owed := map[uint64][]string{}
	for _, s := range script {
		_ = mgrW.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := mgrW.Write(s.frame); err != nil {
			break // the tunnel ended the session (after a Stop): nothing more is owed
		}
		if s.id != 0 {
			owed[s.id] = append(owed[s.id], s.want)
		}
	}

	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		if unanswered := checkReplies(t, &mu, replies, owed); unanswered == 0 {
			break
		}
		select {
		case <-changed:
			continue
		case err := <-ended:
			if !errors.Is(err, io.EOF) {
				t.Fatalf("the session did not end cleanly: %v", err)
			}
		case <-deadline.C:
			t.Fatalf("requests unanswered after 15s and the session still open: %d", checkReplies(t, &mu, replies, owed))
		}
		break
	}
	_ = mgrW.Close() // the manager hangs up
	select {
	case <-tunnel.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the tunnel did not end within 5s of the manager hanging up")
	}
}

// readTunnelFrame reads one frame the way the protocol defines it, without
// our speaker, so that a framing mistake of ours cannot cancel out. A clean
// end between frames is exactly io.EOF; one inside a frame is not.
func readTunnelFrame(r io.Reader) (*vpnpb.TunnelMessage, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > 16<<20 {
		return nil, fmt.Errorf("the tunnel announced a %d-byte frame", size)
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, fmt.Errorf("frame cut short after its length: %w", io.ErrUnexpectedEOF)
	}
	m := &vpnpb.TunnelMessage{}
	if err := proto.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("undecodable frame: %w", err)
	}
	return m, nil
}

// tunnelKind names what m carries, in the form fuzzScript's wants use.
func tunnelKind(m *vpnpb.TunnelMessage) string {
	r := m.ProtoReflect()
	if fd := r.WhichOneof(r.Descriptor().Oneofs().ByName("msg")); fd != nil {
		return "TunnelMessage." + string(fd.Name())
	}
	return "TunnelMessage (empty)"
}

// checkReplies fails on a reply of a kind no request with its id asked for,
// or on more replies than requests with that id, and returns how many owed
// replies are still missing. Requests sharing an id may be answered in any
// order.
func checkReplies(t *testing.T, mu *sync.Mutex, replies, owed map[uint64][]string) int {
	mu.Lock()
	defer mu.Unlock()
	missing := 0
	for id, wants := range owed {
		got := replies[id]
		if len(got) > len(wants) {
			t.Fatalf("request %d got %d replies %v for %d requests", id, len(got), got, len(wants))
		}
		left := slices.Clone(wants)
		for _, kind := range got {
			i := slices.Index(left, kind)
			if i < 0 {
				i = slices.Index(left, "") // a request of any kind
			}
			if i < 0 {
				t.Fatalf("request %d got %v, want replies of kinds %v", id, got, wants)
			}
			left = slices.Delete(left, i, i+1)
		}
		missing += len(left)
	}
	return missing
}
