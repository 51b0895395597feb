package speaker

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// FuzzReadFrame decodes arbitrary bytes as a stream of frames, as both a
// ManagerMessage stream and a TunnelMessage stream. Seeds:
// testdata/fuzz/FuzzReadFrame.
func FuzzReadFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzFrames(t, data, func() proto.Message { return &vpnpb.ManagerMessage{} })
		fuzzFrames(t, data, func() proto.Message { return &vpnpb.TunnelMessage{} })
	})
}

func fuzzFrames(t *testing.T, data []byte, newMsg func() proto.Message) {
	r := bytes.NewReader(data)
	for {
		before := r.Len()
		msg := newMsg()
		err := readFrame(r, msg)
		switch {
		case err == io.EOF:
			if before != 0 {
				t.Fatalf("clean EOF reported with %d bytes left", before)
			}
			return
		case errors.Is(err, io.EOF):
			t.Fatalf("error %v wraps io.EOF: a broken stream must not look like a clean end", err)
		case errors.Is(err, ErrTruncatedFrame), errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrCorruptFrame):
			return
		case err != nil:
			t.Fatalf("unexpected error kind: %v", err)
		}
		// A decoded message survives our own encoding unchanged.
		frame, err := encodeFrame(msg)
		if err != nil {
			t.Fatalf("re-encode %v: %v", msg, err)
		}
		again := newMsg()
		if err := readFrame(bytes.NewReader(frame), again); err != nil {
			t.Fatalf("decode our own encoding of %v: %v", msg, err)
		}
		if !proto.Equal(msg, again) {
			t.Fatalf("round trip changed %v into %v", msg, again)
		}
		_ = messageKind(msg)
	}
}
