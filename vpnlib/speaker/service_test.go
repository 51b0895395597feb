package speaker

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	codervpn "github.com/coder/coder/v2/vpn"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// clientServicePair connects our Client and Service over two os.Pipes.
func clientServicePair(t *testing.T, sopts Options[*vpnpb.ClientMessage]) (*Client, *Service) {
	t.Helper()
	cEnd, sEnd := newPipePair(t)
	ctx := testContext(t)
	type res struct {
		s   *Service
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := NewService(ctx, sEnd.r, sEnd.w, sopts)
		ch <- res{s, err}
	}()
	c, cerr := NewClient(ctx, cEnd.r, cEnd.w, Options[*vpnpb.ServiceMessage]{})
	sr := <-ch
	if cerr != nil || sr.err != nil {
		t.Fatalf("client/service pair: client %v, service %v", cerr, sr.err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		_ = sr.s.Close()
	})
	return c, sr.s
}

func TestClientServiceCall(t *testing.T) {
	t.Parallel()
	reqs, onReq := queue[*vpnpb.ClientMessage]()
	c, s := clientServicePair(t, Options[*vpnpb.ClientMessage]{OnRequest: onReq})
	if c.Version() != ServiceVersion || s.Version() != ServiceVersion {
		t.Fatalf("negotiated %v/%v, want %v", c.Version(), s.Version(), ServiceVersion)
	}
	done := make(chan *vpnpb.ServiceMessage, 1)
	go func() {
		resp, err := c.Call(testContext(t), &vpnpb.ClientMessage{Msg: &vpnpb.ClientMessage_Status{Status: &vpnpb.StatusRequest{}}})
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	req := recv(t, reqs, "StatusRequest")
	if req.GetStatus() == nil || req.GetRpc().GetMsgId() != 1 {
		t.Fatalf("service got %v, want StatusRequest with msg_id 1", req)
	}
	if err := s.Reply(req, &vpnpb.ServiceMessage{Msg: &vpnpb.ServiceMessage_Status{Status: &vpnpb.Status{
		Lifecycle: vpnpb.Status_STARTED,
	}}}); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, done, "Status reply"); got.GetStatus().GetLifecycle() != vpnpb.Status_STARTED {
		t.Fatalf("client got %v", got)
	}
}

// TestServiceRefusesEmptyFrame: a zero-length frame ends a client/service
// session (Coder Desktop's service refuses them too), while the tunnel leg
// still accepts one as an empty message.
func TestServiceRefusesEmptyFrame(t *testing.T) {
	t.Parallel()
	cEnd, sEnd := newPipePair(t)
	ctx := testContext(t)
	go func() {
		_, _ = io.WriteString(cEnd.w, "codervpn client 1.1\n")
		_, _ = cEnd.w.Write([]byte{0, 0, 0, 0})
	}()
	go func() { _, _ = io.Copy(io.Discard, cEnd.r) }()
	s, err := NewService(ctx, sEnd.r, sEnd.w, Options[*vpnpb.ClientMessage]{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitDone(t, s.Done(), "the session to end on an empty frame")
	if !errors.Is(s.Err(), ErrEmptyFrame) {
		t.Fatalf("session ended with %v, want ErrEmptyFrame", s.Err())
	}
}

func TestServiceRoleMismatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, header, want string
	}{
		{name: "manager", header: "codervpn manager 1.3\n", want: `unknown role "manager"`},
		{name: "service", header: "codervpn service 1.1\n", want: "both ends are the service"},
		{name: "no common major", header: "codervpn client 2.0\n", want: "major"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cEnd, sEnd := newPipePair(t)
			go func() { _, _ = io.WriteString(cEnd.w, tt.header) }()
			go func() { _, _ = io.Copy(io.Discard, cEnd.r) }()
			_, err := NewService(testContext(t), sEnd.r, sEnd.w, Options[*vpnpb.ClientMessage]{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewService with peer header %q: %v, want an error containing %q", tt.header, err, tt.want)
			}
		})
	}
}

// TestClientServiceWireCompat proves the client/service messages decode as
// Coder's generated types (what Coder Desktop for Windows is generated from)
// and back, field by field; our private StartRequest.persist is an unknown
// field to them and is skipped.
func TestClientServiceWireCompat(t *testing.T) {
	t.Parallel()
	ours := &vpnpb.ClientMessage{Rpc: &vpnpb.RPC{MsgId: 7}, Msg: &vpnpb.ClientMessage_Start{Start: &vpnpb.StartRequest{
		CoderUrl: "https://coder.example.com", ApiToken: "tok",
		Headers: []*vpnpb.StartRequest_Header{{Name: "X-A", Value: "b"}}, DeviceOs: "linux", Persist: true,
	}}}
	var theirs codervpn.ClientMessage
	roundTrip(t, ours, &theirs)
	if st := theirs.GetStart(); theirs.GetRpc().GetMsgId() != 7 || st.GetCoderUrl() != "https://coder.example.com" ||
		st.GetApiToken() != "tok" || st.GetHeaders()[0].GetValue() != "b" || st.GetDeviceOs() != "linux" {
		t.Fatalf("Coder decoded our ClientMessage as %v", &theirs)
	}
	for _, msg := range []*codervpn.ClientMessage{
		{Msg: &codervpn.ClientMessage_Stop{Stop: &codervpn.StopRequest{}}},
		{Msg: &codervpn.ClientMessage_Status{Status: &codervpn.StatusRequest{}}},
	} {
		var back vpnpb.ClientMessage
		roundTrip(t, msg, &back)
		if (msg.GetStop() != nil) != (back.GetStop() != nil) || (msg.GetStatus() != nil) != (back.GetStatus() != nil) {
			t.Fatalf("Coder's %v decoded as our %v", msg, &back)
		}
	}

	total := uint64(100)
	coderMsgs := []*codervpn.ServiceMessage{
		{Rpc: &codervpn.RPC{ResponseTo: 3}, Msg: &codervpn.ServiceMessage_Status{Status: &codervpn.Status{
			Lifecycle: codervpn.Status_STARTED, ErrorMessage: "e",
			PeerUpdate: &codervpn.PeerUpdate{UpsertedAgents: []*codervpn.Agent{{
				Name: "main", Fqdn: []string{"main.dev.me.coder."},
				LastPing: &codervpn.LastPing{Latency: durationpb.New(5), DidP2P: true},
			}}},
		}}},
		{Msg: &codervpn.ServiceMessage_StartProgress{StartProgress: &codervpn.StartProgress{
			Stage:            codervpn.StartProgressStage_Downloading,
			DownloadProgress: &codervpn.StartProgressDownloadProgress{BytesWritten: 9, BytesTotal: &total},
		}}},
		{Msg: &codervpn.ServiceMessage_Start{Start: &codervpn.StartResponse{Success: true}}},
		{Msg: &codervpn.ServiceMessage_Stop{Stop: &codervpn.StopResponse{ErrorMessage: "x"}}},
	}
	for _, msg := range coderMsgs {
		var back vpnpb.ServiceMessage
		roundTrip(t, msg, &back)
		var again codervpn.ServiceMessage
		roundTrip(t, &back, &again)
		if !proto.Equal(msg, &again) {
			t.Fatalf("Coder's %v came back through ours as %v", msg, &again)
		}
	}
}

func roundTrip(t *testing.T, from, into proto.Message) {
	t.Helper()
	b, err := proto.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, into); err != nil {
		t.Fatalf("decode %T as %T: %v", from, into, err)
	}
}

// TestServiceFrameReachesCoderTypes: a frame our Service writes decodes as
// Coder's ServiceMessage.
func TestServiceFrameReachesCoderTypes(t *testing.T) {
	t.Parallel()
	frame, err := encodeFrame(&vpnpb.ServiceMessage{Msg: &vpnpb.ServiceMessage_StartProgress{
		StartProgress: &vpnpb.StartProgress{Stage: vpnpb.StartProgressStage_Finalizing},
	}})
	if err != nil {
		t.Fatal(err)
	}
	n := binary.BigEndian.Uint32(frame)
	var theirs codervpn.ServiceMessage
	if err := proto.Unmarshal(frame[4:4+n], &theirs); err != nil {
		t.Fatal(err)
	}
	if theirs.GetStartProgress().GetStage() != codervpn.StartProgressStage_Finalizing {
		t.Fatalf("decoded %v", &theirs)
	}
}
