package abi

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// normalizeC drops comments, the header's nullability macros and extra
// spaces, and joins declarations split over lines.
func normalizeC(src string) string {
	src = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(src, "")
	src = regexp.MustCompile(`//[^\n]*`).ReplaceAllString(src, "")
	src = regexp.MustCompile(`\bCODERVPN_(NULLABLE|NONNULL)\b`).ReplaceAllString(src, "")
	src = regexp.MustCompile(`[ \t]*\n[ \t]+`).ReplaceAllString(src, " ") // continuation lines
	src = regexp.MustCompile(`[ \t]+`).ReplaceAllString(src, " ")
	src = strings.ReplaceAll(src, "* ", "*")
	src = strings.ReplaceAll(src, " )", ")")
	return src
}

// declarations are the prototypes of coder* functions and the log
// callback's type in C source, normalized, one per entry.
func declarations(src string) []string {
	re := regexp.MustCompile(`(?m)^(?:(?:int32_t|int64_t|const char) \*?coder\w+\([^)]*\);|typedef void \(\*coderLogCallback\)\([^)]*\);)`)
	out := re.FindAllString(normalizeC(src), -1)
	slices.Sort(out)
	return out
}

// swiftSection is the README's "For Swift integrators" part.
func swiftSection(t *testing.T) string {
	t.Helper()
	readme := moduleFile(t, "README.md")
	i := strings.Index(readme, "## For Swift integrators")
	if i < 0 {
		t.Fatal(`README.md has no "## For Swift integrators" section`)
	}
	return readme[i:]
}

// The README's Swift section shows every function of the header with the
// header's signature (and the callback's type), nothing the header lacks,
// and names only constants the header defines; its table lists exactly the
// header's return codes.
func TestREADMEMatchesHeader(t *testing.T) {
	header := moduleFile(t, "cmd/dylib/codervpn.h")
	section := swiftSection(t)
	want := declarations(header)
	if len(want) < 7 {
		t.Fatalf("found only %d declarations in codervpn.h: %q", len(want), want)
	}
	var blocks strings.Builder
	for _, m := range regexp.MustCompile("(?s)```c\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks.WriteString(m[1])
	}
	if got := declarations(blocks.String()); !slices.Equal(got, want) {
		t.Errorf("the README's C block declares\n  %s\nthe header\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}

	// Names the header defines, or tests (CODERVPN_NO_PROTOTYPES).
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#(?:define|ifndef) (CODERVPN_\w+)`).FindAllStringSubmatch(header, -1) {
		known[m[1]] = true
	}
	for _, name := range regexp.MustCompile(`CODERVPN_[A-Z_]*[A-Z](_\*)?`).FindAllString(section, -1) {
		if prefix, ok := strings.CutSuffix(name, "*"); ok { // CODERVPN_LOG_*: some name must match
			ok = false
			for k := range known {
				ok = ok || strings.HasPrefix(k, prefix)
			}
			if !ok {
				t.Errorf("the README names %s, and codervpn.h defines no such name", name)
			}
			continue
		}
		if !known[name] {
			t.Errorf("the README names %s, which codervpn.h does not define", name)
		}
	}
	codes := func(src string) []string {
		var out []string
		for _, m := range regexp.MustCompile(`CODERVPN_ERR_[A-Z_]+`).FindAllString(src, -1) {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
		slices.Sort(out)
		return out
	}
	if h, r := codes(header), codes(section); !slices.Equal(h, r) {
		t.Errorf("codervpn.h has the return codes %v, the README's Swift section %v", h, r)
	}
}
