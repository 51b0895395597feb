package vpntest_test

import (
	"encoding/binary"
	"testing"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// FuzzParseSourceRequest: the source-port request parser accepts exactly the
// 8-byte big-endian counts up to MaxSourceBytes and never panics.
func FuzzParseSourceRequest(f *testing.F) {
	for _, n := range []uint64{0, 1, 1 << 20, vpntest.MaxSourceBytes, vpntest.MaxSourceBytes + 1, ^uint64(0)} {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], n)
		f.Add(b[:])
	}
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := vpntest.ParseSourceRequest(b)
		valid := len(b) == 8 && binary.BigEndian.Uint64(b) <= vpntest.MaxSourceBytes
		if valid != (err == nil) {
			t.Fatalf("ParseSourceRequest(%x) = %d, %v; valid=%v", b, n, err, valid)
		}
		if err == nil && n != binary.BigEndian.Uint64(b) {
			t.Fatalf("ParseSourceRequest(%x) = %d", b, n)
		}
	})
}
