package speaker

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// FuzzParseHeader feeds arbitrary bytes to the handshake's header reader and
// validator. Seeds: testdata/fuzz/FuzzParseHeader.
func FuzzParseHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		line, err := readHeaderLine(r)
		consumed := len(data) - r.Len()
		if consumed > maxHeaderLen+1 {
			t.Fatalf("header reader consumed %d bytes, more than %d", consumed, maxHeaderLen+1)
		}
		if err != nil {
			return
		}
		if consumed != len(line)+1 || data[len(line)] != '\n' || bytes.IndexByte([]byte(line), '\n') >= 0 {
			t.Fatalf("header reader returned %q after consuming %d bytes: it must stop right after the first newline", line, consumed)
		}
		for _, role := range []Role{RoleManager, RoleTunnel} {
			versions, err := parseHeader(line, role)
			if err != nil {
				var he *HandshakeError
				if !errors.As(err, &he) || he.Header != line {
					t.Fatalf("parseHeader error %v does not carry the peer's header", err)
				}
				continue
			}
			if len(line) > maxHeaderLen {
				t.Fatalf("accepted a %d-byte header", len(line))
			}
			// Whatever we accept, we can write back and accept again.
			again, err := parseHeader(headerLine(role, versions)[:len(headerLine(role, versions))-1], role)
			if err != nil || !slices.Equal(again, versions) {
				t.Fatalf("re-formatted header %q: %v, %v (want %v)", headerLine(role, versions), again, err, versions)
			}
			v, err := negotiateVersion([]Version{CurrentVersion}, versions)
			if err == nil && (v.Major != CurrentVersion.Major || v.Minor > CurrentVersion.Minor) {
				t.Fatalf("negotiated %v from %v", v, versions)
			}
		}
	})
}
