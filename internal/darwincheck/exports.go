package darwincheck

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Export flags of the export trie (mach-o/loader.h).
const (
	exportKindMask      = 0x03
	exportKindThreadLoc = 0x01
	exportKindAbsolute  = 0x02
	exportWeakDef       = 0x04
	exportReexport      = 0x08
	exportStubResolver  = 0x10
)

// Export is one name dyld can bind to or dlsym can find.
type Export struct {
	Name string
	// Weak is a weak definition: another image's definition wins, the
	// mark compiler_rt's functions carry when a linker exports them.
	Weak bool
	// Reexport names a symbol of another library exported as this one's.
	Reexport bool
}

// maxTrieDepth bounds the walk, so a corrupt trie with a cycle fails.
const maxTrieDepth = 4096

// parseExportTrie lists the terminals of a Mach-O export trie: each node is
// a ULEB128 terminal size, the terminal's flags and address (or re-export
// ordinal and name), then a count of edges, each a NUL-terminated label and
// the ULEB128 offset of the child node.
func parseExportTrie(trie []byte) ([]Export, error) {
	var out []Export
	seen := make(map[uint64]bool)
	var walk func(off uint64, prefix string, depth int) error
	walk = func(off uint64, prefix string, depth int) error {
		if depth > maxTrieDepth || seen[off] {
			return fmt.Errorf("node at %d: the trie loops", off)
		}
		seen[off] = true
		r := &trieReader{b: trie, p: off}
		termSize := r.uleb()
		childrenAt := r.p + termSize
		if termSize > 0 {
			flags := r.uleb()
			e := Export{Name: prefix, Weak: flags&exportWeakDef != 0, Reexport: flags&exportReexport != 0}
			out = append(out, e)
		}
		r.p = childrenAt
		n := r.byte()
		for i := 0; i < int(n) && r.err == nil; i++ {
			label := r.cstring()
			child := r.uleb()
			if r.err != nil {
				break
			}
			if err := walk(child, prefix+label, depth+1); err != nil {
				return err
			}
		}
		if r.err != nil {
			return fmt.Errorf("node at %d: %w", off, r.err)
		}
		return nil
	}
	if len(trie) == 0 {
		return nil, nil
	}
	if err := walk(0, "", 0); err != nil {
		return nil, err
	}
	return out, nil
}

var errTrieShort = errors.New("truncated")

type trieReader struct {
	b   []byte
	p   uint64
	err error
}

func (r *trieReader) byte() byte {
	if r.err != nil || r.p >= uint64(len(r.b)) {
		r.err = errTrieShort
		return 0
	}
	c := r.b[r.p]
	r.p++
	return c
}

func (r *trieReader) uleb() uint64 {
	if r.err != nil || r.p >= uint64(len(r.b)) {
		r.err = errTrieShort
		return 0
	}
	v, n := binary.Uvarint(r.b[r.p:])
	if n <= 0 {
		r.err = errors.New("a bad ULEB128 number")
		return 0
	}
	r.p += uint64(n)
	return v
}

func (r *trieReader) cstring() string {
	start := r.p
	for {
		if r.byte() == 0 || r.err != nil {
			break
		}
	}
	if r.err != nil {
		return ""
	}
	return string(r.b[start : r.p-1])
}
