package tunfd

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// The utun header is a 32-bit big-endian protocol family. The values are
// Darwin's, and we use them on every OS so that a socketpair standing in for a
// utun in tests carries exactly the bytes a Mac would.
const (
	utunHeaderLen = 4
	afInet        = 2
	afInet6       = 30
)

// verdict says why a frame read from the fd was accepted or dropped.
type verdict uint8

const (
	verdictOK verdict = iota
	verdictShort
	verdictUnknownFamily
	verdictBadVersion
	verdictFamilyMismatch
)

// ipVersion returns the version nibble of an IP packet, or 0 for an empty one.
func ipVersion(pkt []byte) byte {
	if len(pkt) == 0 {
		return 0
	}
	return pkt[0] >> 4
}

// ipDeclaredLen returns the total length an IP packet's header claims, or 0
// when pkt is too short to say or is not IPv4/IPv6.
func ipDeclaredLen(pkt []byte) int {
	switch ipVersion(pkt) {
	case 4:
		if len(pkt) >= 4 {
			return int(binary.BigEndian.Uint16(pkt[2:]))
		}
	case 6:
		if len(pkt) >= 6 {
			return 40 + int(binary.BigEndian.Uint16(pkt[4:]))
		}
	}
	return 0
}

// checkUTun classifies a whole utun frame (header included).
func checkUTun(frame []byte) verdict {
	// A header with no packet behind it is as useless as a cut-off header.
	if len(frame) <= utunHeaderLen {
		return verdictShort
	}
	var want byte
	switch binary.BigEndian.Uint32(frame) {
	case afInet:
		want = 4
	case afInet6:
		want = 6
	default:
		return verdictUnknownFamily
	}
	got := ipVersion(frame[utunHeaderLen:])
	if got != 4 && got != 6 {
		return verdictBadVersion
	}
	if got != want {
		return verdictFamilyMismatch
	}
	return verdictOK
}

// checkRaw classifies a packet read without any framing (Linux IFF_NO_PI tun).
func checkRaw(pkt []byte) verdict {
	if len(pkt) == 0 {
		return verdictShort
	}
	if v := ipVersion(pkt); v != 4 && v != 6 {
		return verdictBadVersion
	}
	return verdictOK
}

// putUTunHeader writes the utun header for pkt into hdr (4 bytes). It reports
// false when pkt is neither IPv4 nor IPv6, in which case hdr is untouched.
func putUTunHeader(hdr, pkt []byte) bool {
	var af uint32
	switch ipVersion(pkt) {
	case 4:
		af = afInet
	case 6:
		af = afInet6
	default:
		return false
	}
	binary.BigEndian.PutUint32(hdr[:utunHeaderLen], af)
	return true
}

// Stats counts what the device delivered and what it dropped. Drops are never
// errors — one malformed packet must not take the tunnel down — so these
// counters are the only trace they leave (tests and benchmarks read them).
type Stats struct {
	// ShortFrames: a frame too short to hold the utun header and at least one
	// byte of packet, or an empty packet on an unframed fd.
	ShortFrames uint64
	// UnknownFamily: a utun header naming neither AF_INET (2) nor AF_INET6 (30).
	UnknownFamily uint64
	// BadIPVersion: a packet whose version nibble is neither 4 nor 6.
	BadIPVersion uint64
	// FamilyMismatch: a utun header whose family disagrees with the packet's
	// IP version (e.g. AF_INET on an IPv6 packet).
	FamilyMismatch uint64
	// Oversize: a packet larger than the buffer the engine offered for it.
	Oversize uint64

	// WriteBadIPVersion: packets handed to Write that were neither IPv4 nor
	// IPv6 (so no utun header could be chosen); dropped, the batch goes on.
	WriteBadIPVersion uint64
	// WriteErrors: packets the kernel refused one by one (too big, no buffer
	// space, invalid); dropped, the batch goes on.
	WriteErrors uint64

	PacketsIn  uint64 // packets delivered to the engine by Read
	PacketsOut uint64 // packets written to the fd by Write
	// EmptyReads: reads of the fd that found nothing queued (EAGAIN), each
	// a system call that brought no packet. One ends every Read that took
	// less than a full batch, and one comes before each wait for the fd.
	EmptyReads uint64
}

// String renders the counters compactly for a log line.
func (s Stats) String() string {
	return fmt.Sprintf("in=%d out=%d dropped: short=%d unknown_af=%d bad_ipver=%d af_mismatch=%d oversize=%d write_bad_ipver=%d write_err=%d",
		s.PacketsIn, s.PacketsOut,
		s.ShortFrames, s.UnknownFamily, s.BadIPVersion, s.FamilyMismatch,
		s.Oversize, s.WriteBadIPVersion, s.WriteErrors)
}

// counters is the live, concurrently updated form of Stats.
type counters struct {
	short, unknownFamily, badVersion, mismatch, oversize atomic.Uint64
	writeBadVersion, writeErrors                         atomic.Uint64
	packetsIn, packetsOut                                atomic.Uint64
	emptyReads                                           atomic.Uint64
}

func (c *counters) drop(v verdict) {
	switch v {
	case verdictShort:
		c.short.Add(1)
	case verdictUnknownFamily:
		c.unknownFamily.Add(1)
	case verdictBadVersion:
		c.badVersion.Add(1)
	case verdictFamilyMismatch:
		c.mismatch.Add(1)
	}
}

func (c *counters) snapshot() Stats {
	return Stats{
		ShortFrames:       c.short.Load(),
		UnknownFamily:     c.unknownFamily.Load(),
		BadIPVersion:      c.badVersion.Load(),
		FamilyMismatch:    c.mismatch.Load(),
		Oversize:          c.oversize.Load(),
		WriteBadIPVersion: c.writeBadVersion.Load(),
		WriteErrors:       c.writeErrors.Load(),
		PacketsIn:         c.packetsIn.Load(),
		PacketsOut:        c.packetsOut.Load(),
		EmptyReads:        c.emptyReads.Load(),
	}
}
