package darwincheck

import (
	"crypto/sha256"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

// trieNode builds one node of an export trie: terminal flags (nil: not a
// terminal) and edges to children at the given offsets.
func trieNode(flags []byte, edges ...any) []byte {
	var b []byte
	if flags == nil {
		b = append(b, 0)
	} else {
		term := append(append([]byte{}, flags...), 0x10) // flags, address 0x10
		b = append(b, byte(len(term)))
		b = append(b, term...)
	}
	b = append(b, byte(len(edges)/2))
	for i := 0; i < len(edges); i += 2 {
		b = append(b, edges[i].(string)...)
		b = append(b, 0, byte(edges[i+1].(int)))
	}
	return b
}

func TestParseExportTrie(t *testing.T) {
	t.Parallel()
	// root → "_coder" (at 20) → "StartVPN" (at 45), "StopVPN" (at 55);
	// root → "_memcpy" (at 65), a weak definition.
	trie := make([]byte, 80)
	copy(trie[0:], trieNode(nil, "_coder", 20, "_memcpy", 65))
	copy(trie[20:], trieNode(nil, "StartVPN", 45, "StopVPN", 55))
	copy(trie[45:], trieNode([]byte{0}))
	copy(trie[55:], trieNode([]byte{0}))
	copy(trie[65:], trieNode([]byte{exportWeakDef}))
	got, err := parseExportTrie(trie)
	if err != nil {
		t.Fatal(err)
	}
	want := []Export{{Name: "_coderStartVPN"}, {Name: "_coderStopVPN"}, {Name: "_memcpy", Weak: true}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("exports %+v, want %+v", got, want)
	}

	for name, bad := range map[string][]byte{
		"loop":      trieNode(nil, "_a", 0),
		"truncated": trieNode(nil, "_a", 20)[:4],
		"past end":  trieNode(nil, "_a", 90),
	} {
		if _, err := parseExportTrie(bad); err == nil {
			t.Errorf("%s: a corrupt trie parsed", name)
		}
	}
}

func TestParsePlistStrings(t *testing.T) {
	t.Parallel()
	kv, err := parsePlistStrings([]byte(`<?xml version="1.0"?><plist version="1.0"><dict>
		<key>A</key><string>1</string>
		<key>List</key><array><string>not top-level</string></array>
		<key>Flag</key><true/>
		<key>B</key><string>two &amp; more</string>
	</dict></plist>`))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"A": "1", "B": "two & more"}; !reflect.DeepEqual(kv, want) {
		t.Fatalf("got %v, want %v", kv, want)
	}
	for name, bad := range map[string]string{
		"zeros":         "\x00\x00\x00\x00",
		"unclosed":      "<plist><dict><key>A</key><string>1</string>",
		"no dict":       "<plist><string>1</string></plist>",
		"string no key": "<plist><dict><string>1</string></dict></plist>",
	} {
		if _, err := parsePlistStrings([]byte(bad)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// signedFile makes a file of two 4 KiB pages and a third partial one,
// followed by an embedded signature whose CodeDirectory hashes them.
func signedFile() (file []byte, sigOff uint32) {
	code := []byte(strings.Repeat("codervpn", 1300)) // 10400 bytes: 3 pages
	be := binary.BigEndian
	const pageShift, hashSize = 12, 32
	nCode := (len(code) + 4095) / 4096
	cd := make([]byte, 44+nCode*hashSize)
	be.PutUint32(cd[0:], csMagicCodeDirectory)
	be.PutUint32(cd[4:], uint32(len(cd)))
	be.PutUint32(cd[16:], 44) // hashOffset
	be.PutUint32(cd[28:], uint32(nCode))
	be.PutUint32(cd[32:], uint32(len(code)))
	cd[36], cd[37], cd[39] = hashSize, csHashSHA256, pageShift
	for i := range nCode {
		h := sha256.Sum256(code[i*4096 : min((i+1)*4096, len(code))])
		copy(cd[44+i*hashSize:], h[:])
	}
	blob := make([]byte, 20)
	be.PutUint32(blob[0:], csMagicEmbeddedSignature)
	be.PutUint32(blob[4:], uint32(20+len(cd)))
	be.PutUint32(blob[8:], 1)
	be.PutUint32(blob[16:], 20) // the CodeDirectory's offset
	blob = append(blob, cd...)
	return append(code, blob...), uint32(len(code))
}

func TestCheckSignature(t *testing.T) {
	t.Parallel()
	file, off := signedFile()
	if got := checkSignature(file, off, file[off:]); got != SignatureValid {
		t.Fatalf("a good signature: %v", got)
	}
	changed := append([]byte(nil), file...)
	changed[5000] ^= 1 // a byte of the second page, as a strip would
	if got := checkSignature(changed, off, changed[off:]); got != SignatureInvalid {
		t.Fatalf("a changed page: %v", got)
	}
	if got := checkSignature(file, off, []byte("not a blob at all")); got != SignatureInvalid {
		t.Fatalf("garbage: %v", got)
	}
}
