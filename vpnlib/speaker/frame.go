package speaker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/protobuf/proto"
)

// MaxFrameSize is the largest message payload, in bytes, either side may send
// (16 MiB). The length prefix is checked against it before any memory is
// set aside, so a corrupt or hostile length cannot make us allocate gigabytes.
const MaxFrameSize = 16 << 20

// frameHeaderLen is the size of the big-endian length in front of a payload.
const frameHeaderLen = 4

// payloadChunk is how much of a payload is buffered up front. Larger payloads
// grow their buffer as bytes actually arrive, so a peer that announces 16 MiB
// and then sends ten bytes costs us ten bytes plus this, not 16 MiB.
const payloadChunk = 64 << 10

// Errors that end a session because the byte stream can no longer be trusted.
// They are wrapped with the details (sizes, how far we got) and can be told
// apart with errors.Is.
var (
	// ErrFrameTooLarge: a length prefix over MaxFrameSize, or an outgoing
	// message that would encode to more than that.
	ErrFrameTooLarge = errors.New("CoderVPN frame too large")
	// ErrTruncatedFrame: the peer closed the stream part way through a frame.
	ErrTruncatedFrame = errors.New("CoderVPN frame truncated")
	// ErrCorruptFrame: the payload is not a valid protobuf message of the
	// expected type.
	ErrCorruptFrame = errors.New("CoderVPN frame payload cannot be decoded")
	// ErrEmptyFrame: a zero-length frame between client and service, which
	// Coder Desktop's service refuses too (an empty message says nothing,
	// and a stream of them is a cheap way to keep a reader busy).
	ErrEmptyFrame = errors.New("CoderVPN frame is empty")
)

// encodeFrame returns the complete frame for msg (length prefix and payload)
// in one slice, so that it can go out in a single Write.
func encodeFrame(msg proto.Message) ([]byte, error) {
	buf := make([]byte, frameHeaderLen, frameHeaderLen+proto.Size(msg))
	buf, err := proto.MarshalOptions{}.MarshalAppend(buf, msg)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", messageKind(msg), err)
	}
	n := len(buf) - frameHeaderLen
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w: %s encodes to %d bytes; the limit is %d",
			ErrFrameTooLarge, messageKind(msg), n, MaxFrameSize)
	}
	binary.BigEndian.PutUint32(buf, uint32(n))
	return buf, nil
}

// readFrame reads one frame from r and decodes it into msg. At a frame
// boundary an end of stream is the peer finishing cleanly and comes back as
// exactly io.EOF; anywhere else it is ErrTruncatedFrame.
func readFrame(r io.Reader, msg proto.Message) error {
	return readFrameOpts(r, msg, false)
}

// readFrameOpts is readFrame that, with refuseEmpty, fails a zero-length
// frame with ErrEmptyFrame.
func readFrameOpts(r io.Reader, msg proto.Message, refuseEmpty bool) error {
	var hdr [frameHeaderLen]byte
	n, err := io.ReadFull(r, hdr[:])
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) && n == 0:
		return io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: stream ended after %d of the %d length bytes", ErrTruncatedFrame, n, frameHeaderLen)
	default:
		return fmt.Errorf("read frame length: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > MaxFrameSize {
		return fmt.Errorf("%w: peer announced a %d-byte frame; the limit is %d", ErrFrameTooLarge, size, MaxFrameSize)
	}
	if size == 0 && refuseEmpty {
		return fmt.Errorf("%w: a zero-length %s", ErrEmptyFrame, msg.ProtoReflect().Descriptor().Name())
	}
	payload, err := readPayload(r, int(size))
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(payload, msg); err != nil {
		return fmt.Errorf("%w: %d-byte payload is not a %s: %w",
			ErrCorruptFrame, size, msg.ProtoReflect().Descriptor().Name(), err)
	}
	return nil
}

func readPayload(r io.Reader, size int) ([]byte, error) {
	buf := make([]byte, 0, min(size, payloadChunk))
	for len(buf) < size {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(len(buf), size-len(buf)))
		}
		chunk := buf[len(buf):min(cap(buf), size)]
		n, err := io.ReadFull(r, chunk)
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: stream ended after %d of %d payload bytes", ErrTruncatedFrame, len(buf), size)
		}
		if err != nil {
			return nil, fmt.Errorf("read frame payload (%d of %d bytes read): %w", len(buf), size, err)
		}
	}
	return buf, nil
}

// messageKind names what a ManagerMessage or TunnelMessage carries ("start",
// "peer_update", ...) for errors and logs, without printing its contents:
// a StartRequest holds the API token.
func messageKind(msg proto.Message) string {
	m := msg.ProtoReflect()
	name := string(m.Descriptor().Name())
	oneof := m.Descriptor().Oneofs().ByName("msg")
	if oneof == nil {
		return name
	}
	if fd := m.WhichOneof(oneof); fd != nil {
		return name + "." + string(fd.Name())
	}
	return name + " (empty)"
}
