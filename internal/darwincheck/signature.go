package darwincheck

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

// SignatureState says whether a slice's embedded code signature matches
// its bytes. macOS on Apple silicon runs no arm64 code without a valid
// signature (an ad-hoc one will do until the release is signed), so a
// slice whose pages changed after signing (stripped, say, by a tool that
// does not re-sign) would be killed as soon as it is loaded.
type SignatureState int

const (
	// Unsigned: no LC_CODE_SIGNATURE.
	Unsigned SignatureState = iota
	// SignatureValid: every page hash of the CodeDirectory matches.
	SignatureValid
	// SignatureInvalid: a hash does not match, or the blob is unreadable.
	SignatureInvalid
)

func (s SignatureState) String() string {
	switch s {
	case Unsigned:
		return "unsigned"
	case SignatureValid:
		return "validly signed"
	}
	return "signed, but the signature does not match the file"
}

// Code signature blob magics and hash types (cs_blobs.h).
const (
	csMagicEmbeddedSignature = 0xfade0cc0
	csMagicCodeDirectory     = 0xfade0c02
	csHashSHA1               = 1
	csHashSHA256             = 2
)

// checkSignature verifies the code pages against each CodeDirectory of the
// SuperBlob at sigOff: the hashes of the pages up to codeLimit. It checks
// what the kernel checks when it maps the pages, not who signed.
func checkSignature(file []byte, sigOff uint32, blob []byte) SignatureState {
	be := binary.BigEndian
	if len(blob) < 12 || be.Uint32(blob) != csMagicEmbeddedSignature {
		return SignatureInvalid
	}
	count := be.Uint32(blob[8:])
	directories := 0
	for i := uint32(0); i < count; i++ {
		at := 12 + 8*uint64(i)
		if at+8 > uint64(len(blob)) {
			return SignatureInvalid
		}
		off := uint64(be.Uint32(blob[at+4:]))
		if off+8 > uint64(len(blob)) {
			return SignatureInvalid
		}
		if be.Uint32(blob[off:]) != csMagicCodeDirectory {
			continue
		}
		directories++
		if !codeDirectoryMatches(file, sigOff, blob[off:]) {
			return SignatureInvalid
		}
	}
	if directories == 0 {
		return SignatureInvalid
	}
	return SignatureValid
}

func codeDirectoryMatches(file []byte, sigOff uint32, cd []byte) bool {
	be := binary.BigEndian
	if len(cd) < 40 {
		return false
	}
	length := uint64(be.Uint32(cd[4:]))
	if length > uint64(len(cd)) {
		return false
	}
	cd = cd[:length]
	hashOffset := uint64(be.Uint32(cd[16:]))
	nCode := uint64(be.Uint32(cd[28:]))
	codeLimit := uint64(be.Uint32(cd[32:]))
	hashSize, hashType, pageShift := uint64(cd[36]), cd[37], cd[39]
	var h hash.Hash
	switch hashType {
	case csHashSHA1:
		h = sha1.New()
	case csHashSHA256:
		h = sha256.New()
	default:
		return false
	}
	if codeLimit > uint64(sigOff) || pageShift == 0 || pageShift > 20 || hashSize == 0 || hashSize > uint64(h.Size()) {
		return false
	}
	page := uint64(1) << pageShift
	if nCode != (codeLimit+page-1)/page || hashOffset+nCode*hashSize > uint64(len(cd)) {
		return false
	}
	for i := uint64(0); i < nCode; i++ {
		end := min((i+1)*page, codeLimit)
		h.Reset()
		h.Write(file[i*page : end])
		want := cd[hashOffset+i*hashSize : hashOffset+(i+1)*hashSize]
		if string(h.Sum(nil)[:hashSize]) != string(want) {
			return false
		}
	}
	return true
}
