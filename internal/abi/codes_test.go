package abi

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// moduleFile reads a file of the module by its path from the module root.
func moduleFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The return codes cmd/dylib/codervpn.h defines, the header that ships,
// are the table's, no more and no fewer. (cmd/dylib's TestHeader compiles
// the header against the table's values too.)
func TestHeaderDefinesMatchCodes(t *testing.T) {
	src := moduleFile(t, "cmd/dylib/codervpn.h")
	defines := map[string]int64{}
	for _, m := range regexp.MustCompile(`(?m)^#define (CODERVPN_ERR_[A-Z_]+) \(?(-?\d+)\)?$`).FindAllStringSubmatch(src, -1) {
		v, err := strconv.ParseInt(m[2], 10, 32)
		if err != nil {
			t.Fatalf("#define %s: %v", m[1], err)
		}
		defines[m[1]] = v
	}
	want := map[string]int64{}
	for _, c := range Codes {
		want[c.Name] = int64(c.Value)
	}
	for name, v := range want {
		if got, ok := defines[name]; !ok || got != v {
			t.Errorf("codervpn.h: #define %s is %d (defined: %v), want (%d)", name, got, ok, v)
		}
	}
	for name := range defines {
		if _, ok := want[name]; !ok {
			t.Errorf("codervpn.h defines %s, which abi.Codes does not have", name)
		}
	}
}

// The README's table of return values lists every code with its name and
// meaning, as the table has them.
func TestREADMEListsCodes(t *testing.T) {
	rows := map[string][2]string{} // value -> name, meaning
	for _, line := range strings.Split(moduleFile(t, "README.md"), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 5 || !strings.Contains(cells[2], "CODERVPN_ERR_") {
			continue
		}
		rows[strings.TrimSpace(cells[1])] = [2]string{strings.Trim(strings.TrimSpace(cells[2]), "`"), strings.TrimSpace(cells[3])}
	}
	for _, c := range Codes {
		got, ok := rows[strconv.Itoa(int(c.Value))]
		if want := [2]string{c.Name, c.Meaning}; !ok || got != want {
			t.Errorf("README row for %d is %q (present: %v), want %q", c.Value, got, ok, want)
		}
	}
	if len(rows) != len(Codes) {
		t.Errorf("the README lists %d codes, abi.Codes has %d: %v", len(rows), len(Codes), rows)
	}
}

// Codes are in order, distinct and negative; Lookup finds each.
func TestCodesTable(t *testing.T) {
	for i, c := range Codes {
		if c.Value != int32(-1-i) || c.Name == "" || c.Brief == "" || c.Meaning == "" {
			t.Errorf("Codes[%d] = %+v: want value %d and every field set", i, c, -1-i)
		}
		if got, ok := Lookup(c.Value); !ok || got != c {
			t.Errorf("Lookup(%d) = %+v, %v", c.Value, got, ok)
		}
	}
	if _, ok := Lookup(0); ok {
		t.Error("Lookup(0) found a code; 0 is success")
	}
}
