package vpntest

import (
	"strconv"
	"testing"
)

// FuzzParseByteCount: GET /bytes?n= accepts exactly the decimal counts up to
// MaxSourceBytes and never panics.
func FuzzParseByteCount(f *testing.F) {
	for _, s := range []string{"0", "1", "100000", "1099511627776", "1099511627777", "-1", "", "1e6", " 5", "18446744073709551616"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseByteCount(s)
		want, perr := strconv.ParseUint(s, 10, 64)
		valid := perr == nil && want <= MaxSourceBytes
		if valid != (err == nil) {
			t.Fatalf("parseByteCount(%q) = %d, %v; valid=%v", s, n, err, valid)
		}
		if err == nil && n != want {
			t.Fatalf("parseByteCount(%q) = %d, want %d", s, n, want)
		}
	})
}
