package speaker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// countingReader counts the bytes handed out by the reader it wraps.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func frameBytes(length uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	return append(b, payload...)
}

func TestEncodeFrameExactBytes(t *testing.T) {
	t.Parallel()
	msg := &vpnpb.ManagerMessage{
		Rpc: &vpnpb.RPC{MsgId: 1},
		Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}},
	}
	got, err := encodeFrame(msg)
	if err != nil {
		t.Fatal(err)
	}
	// length 6; field 1 (rpc) = {field 1 (msg_id) = 1}; field 2 (get_peer_update) = {}
	want := []byte{0, 0, 0, 6, 0x0a, 0x02, 0x08, 0x01, 0x12, 0x00}
	if !bytes.Equal(got, want) {
		t.Fatalf("encodeFrame = % x, want % x", got, want)
	}
}

func TestFrameRoundTrip(t *testing.T) {
	t.Parallel()
	msgs := []proto.Message{
		&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Log{Log: &vpnpb.Log{Level: vpnpb.Log_WARN, Message: "hello"}}},
		&vpnpb.TunnelMessage{},
		&vpnpb.TunnelMessage{Rpc: &vpnpb.RPC{ResponseTo: 7}, Msg: &vpnpb.TunnelMessage_Start{Start: &vpnpb.StartResponse{Success: true}}},
		// A payload larger than payloadChunk exercises the growing buffer.
		&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Log{Log: &vpnpb.Log{Message: strings.Repeat("x", 3*payloadChunk+17)}}},
	}
	var stream bytes.Buffer
	for _, m := range msgs {
		b, err := encodeFrame(m)
		if err != nil {
			t.Fatal(err)
		}
		stream.Write(b)
	}
	for i, want := range msgs {
		got := &vpnpb.TunnelMessage{}
		if err := readFrame(&stream, got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("frame %d: got %v, want %v", i, got, want)
		}
	}
	// EOF exactly between frames is the clean end, and nothing else.
	if err := readFrame(&stream, &vpnpb.TunnelMessage{}); err != io.EOF {
		t.Fatalf("read at end of stream = %v, want exactly io.EOF", err)
	}
}

func TestReadFrameErrors(t *testing.T) {
	t.Parallel()
	valid, err := encodeFrame(&vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Stop{Stop: &vpnpb.StopRequest{}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		input     []byte
		wantIs    error
		wantErr   string
		wantCount int // bytes the reader may consume
	}{
		{name: "EOF between frames", input: nil, wantIs: io.EOF, wantErr: "EOF"},
		{name: "oversize length", input: frameBytes(MaxFrameSize+1, make([]byte, 100)), wantIs: ErrFrameTooLarge,
			wantErr: "peer announced a 16777217-byte frame; the limit is 16777216", wantCount: 4},
		{name: "huge length", input: frameBytes(0xffffffff, nil), wantIs: ErrFrameTooLarge, wantErr: "4294967295-byte", wantCount: 4},
		{name: "truncated length", input: []byte{0, 0}, wantIs: ErrTruncatedFrame,
			wantErr: "stream ended after 2 of the 4 length bytes", wantCount: 2},
		{name: "truncated payload", input: valid[:len(valid)-1], wantIs: ErrTruncatedFrame,
			wantErr: "stream ended after 1 of 2 payload bytes", wantCount: len(valid) - 1},
		{name: "max length, few bytes", input: frameBytes(MaxFrameSize, []byte{1, 2, 3}), wantIs: ErrTruncatedFrame,
			wantErr: "after 3 of 16777216 payload bytes", wantCount: 7},
		{name: "garbage payload", input: frameBytes(4, []byte{0xff, 0xff, 0xff, 0xff}), wantIs: ErrCorruptFrame,
			wantErr: "4-byte payload is not a ManagerMessage", wantCount: 8},
		{name: "wrong wire type", input: frameBytes(2, []byte{0x0d, 0x00}), wantIs: ErrCorruptFrame, wantErr: "not a ManagerMessage", wantCount: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cr := &countingReader{r: bytes.NewReader(tt.input)}
			err := readFrame(cr, &vpnpb.ManagerMessage{})
			if !errors.Is(err, tt.wantIs) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("readFrame error %v, want %v containing %q", err, tt.wantIs, tt.wantErr)
			}
			if tt.wantIs != io.EOF && errors.Is(err, io.EOF) {
				t.Fatalf("error %v must not look like a clean EOF", err)
			}
			if cr.n != tt.wantCount {
				t.Fatalf("reader consumed %d bytes, want %d", cr.n, tt.wantCount)
			}
		})
	}
}

// allocatedBytes reports how many bytes f allocates (averaged over runs).
func allocatedBytes(runs int, f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

func TestReadFrameOversizeDoesNotAllocate(t *testing.T) {
	// Not parallel: measures this goroutine's allocations via global stats.
	input := frameBytes(0xfffffff0, nil)
	perRun := allocatedBytes(20, func() {
		if err := readFrame(bytes.NewReader(input), &vpnpb.TunnelMessage{}); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("readFrame = %v, want ErrFrameTooLarge", err)
		}
	})
	if perRun > 16<<10 {
		t.Fatalf("rejecting an oversize length allocated %d bytes per call; want no payload buffer", perRun)
	}
	allocs := testing.AllocsPerRun(20, func() {
		_ = readFrame(bytes.NewReader(input), &vpnpb.TunnelMessage{})
	})
	if allocs > 10 {
		t.Fatalf("rejecting an oversize length took %v allocations", allocs)
	}

	// A peer announcing the maximum but sending little costs little.
	lying := frameBytes(MaxFrameSize, []byte("short"))
	perRun = allocatedBytes(5, func() {
		if err := readFrame(bytes.NewReader(lying), &vpnpb.TunnelMessage{}); !errors.Is(err, ErrTruncatedFrame) {
			t.Errorf("readFrame = %v, want ErrTruncatedFrame", err)
		}
	})
	if perRun > 2*payloadChunk {
		t.Fatalf("a 16 MiB announcement with 5 bytes behind it allocated %d bytes per call", perRun)
	}
}

func TestEncodeFrameTooLarge(t *testing.T) {
	t.Parallel()
	msg := &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Log{Log: &vpnpb.Log{Message: strings.Repeat("x", MaxFrameSize)}}}
	_, err := encodeFrame(msg)
	if !errors.Is(err, ErrFrameTooLarge) || !strings.Contains(err.Error(), "TunnelMessage.log encodes to") {
		t.Fatalf("encodeFrame = %v, want ErrFrameTooLarge naming the message", err)
	}
}

func TestMessageKind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		msg  proto.Message
		want string
	}{
		{&vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{Start: &vpnpb.StartRequest{ApiToken: "secret"}}}, "ManagerMessage.start"},
		{&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_PeerUpdate{}}, "TunnelMessage.peer_update"},
		{&vpnpb.TunnelMessage{}, "TunnelMessage (empty)"},
		{&vpnpb.RPC{}, "RPC"},
	}
	for _, tt := range tests {
		if got := messageKind(tt.msg); got != tt.want {
			t.Errorf("messageKind(%T) = %q, want %q", tt.msg, got, tt.want)
		}
	}
}
