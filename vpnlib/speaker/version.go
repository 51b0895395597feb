package speaker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Version is a CoderVPN protocol version. Within one major version every minor
// version is a compatible extension of the ones before it, so two peers that
// share a major can always talk at the lower of their two minors.
type Version struct {
	Major, Minor uint32
}

// Protocol milestones. Each names the first version in which a peer knows
// about a message or field; the speaker uses them to decide what it may send.
var (
	// Version11 added the telemetry fields of StartRequest (device_id,
	// device_os, coder_desktop_version).
	Version11 = Version{1, 1}
	// Version12 added Agent.last_ping to PeerUpdate.
	Version12 = Version{1, 2}
	// Version13 added WakeRequest and WakeResponse.
	Version13 = Version{1, 3}
)

// ServiceVersion is the version of the client/service protocol (the
// ClientMessage/ServiceMessage pair) that we speak: Coder Desktop for
// Windows' RpcVersion.Current. It is numbered apart from the
// manager/tunnel protocol.
var ServiceVersion = Version{1, 1}

// CurrentVersion is the newest protocol version this implementation speaks,
// and what a speaker offers when Options.Versions is empty.
var CurrentVersion = Version13

// String formats v as "major.minor", the form used in the handshake header.
func (v Version) String() string {
	return strconv.FormatUint(uint64(v.Major), 10) + "." + strconv.FormatUint(uint64(v.Minor), 10)
}

// AtLeast reports whether v is o or newer. Callers use it to ask "does the
// negotiated version know about feature X", e.g. v.AtLeast(Version13) before
// sending a Wake.
func (v Version) AtLeast(o Version) bool {
	if v.Major != o.Major {
		return v.Major > o.Major
	}
	return v.Minor >= o.Minor
}

// ParseVersionList parses the version field of a handshake header:
// "M.m[,M.m...]". It is strict, because a header that a lax parser accepts
// but the peer meant differently would negotiate the wrong protocol: the
// list must be non-empty, each entry two decimal numbers separated by one
// dot with no spaces or signs, every major at least 1, majors strictly
// ascending (which also rules out duplicates).
func ParseVersionList(s string) ([]Version, error) {
	if s == "" {
		return nil, errors.New("empty version list")
	}
	parts := strings.Split(s, ",")
	out := make([]Version, 0, len(parts))
	for i, p := range parts {
		v, err := parseVersion(p)
		if err != nil {
			return nil, fmt.Errorf("version list %q, entry %d: %w", s, i+1, err)
		}
		out = append(out, v)
	}
	if err := validateVersionList(out); err != nil {
		return nil, fmt.Errorf("version list %q: %w", s, err)
	}
	return out, nil
}

// validateVersionList checks the ordering rules of a version list (also used
// for our own Options.Versions, so that we never offer a list a strict
// peer would reject).
func validateVersionList(vs []Version) error {
	if len(vs) == 0 {
		return errors.New("empty version list")
	}
	for i, v := range vs {
		if v.Major == 0 {
			return fmt.Errorf("version %s has major version 0; majors start at 1", v)
		}
		if i == 0 {
			continue
		}
		prev := vs[i-1]
		if prev.Major == v.Major {
			return fmt.Errorf("major version %d appears twice (%s and %s)", v.Major, prev, v)
		}
		if prev.Major > v.Major {
			return fmt.Errorf("versions are not in ascending order of major version (%s before %s)", prev, v)
		}
	}
	return nil
}

func parseVersion(s string) (Version, error) {
	majorStr, minorStr, ok := strings.Cut(s, ".")
	if !ok {
		return Version{}, fmt.Errorf("%q is not of the form major.minor", s)
	}
	major, err := parseVersionNumber(majorStr)
	if err != nil {
		return Version{}, fmt.Errorf("%q: major: %w", s, err)
	}
	minor, err := parseVersionNumber(minorStr)
	if err != nil {
		return Version{}, fmt.Errorf("%q: minor: %w", s, err)
	}
	return Version{Major: major, Minor: minor}, nil
}

func parseVersionNumber(s string) (uint32, error) {
	if s == "" {
		return 0, errors.New("missing number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return uint32(n), nil
}

// formatVersionList is the inverse of ParseVersionList.
func formatVersionList(vs []Version) string {
	var b strings.Builder
	for i, v := range vs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(v.String())
	}
	return b.String()
}

// negotiateVersion picks the version two peers speak: the highest major both
// offer, at the lower of the two minors offered for it. Both lists must be
// valid (see validateVersionList).
func negotiateVersion(ours, theirs []Version) (Version, error) {
	var best Version
	found := false
	for _, a := range ours {
		for _, b := range theirs {
			if a.Major != b.Major || (found && a.Major <= best.Major) {
				continue
			}
			best = Version{Major: a.Major, Minor: min(a.Minor, b.Minor)}
			found = true
		}
	}
	if !found {
		return Version{}, fmt.Errorf("no common major version: we speak %s, peer speaks %s",
			formatVersionList(ours), formatVersionList(theirs))
	}
	return best, nil
}
