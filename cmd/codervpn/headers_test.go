package main

import (
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

func TestParseHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want header
		err  string
	}{
		{in: "X-A: b", want: header{"X-A", "b"}},
		{in: "X-A=b", want: header{"X-A", "b"}},
		{in: "  X-A :  b c  ", want: header{"X-A", "b c"}},
		{in: "Cookie: a=1; b=2", want: header{"Cookie", "a=1; b=2"}},
		{in: "X-Url=https://x:1/?a=b", want: header{"X-Url", "https://x:1/?a=b"}},
		{in: "X-Empty:", want: header{"X-Empty", ""}},
		{in: "novalue", err: "neither ':' nor '='"},
		{in: ": v", err: "has no name"},
		{in: "X A: v", err: "not a valid HTTP header name"},
		{in: "X-A: a\r\nX-B: c", err: "characters a header cannot carry"},
		{in: "coder-session-token: x", err: "--token"},
	}
	for _, tc := range tests {
		got, err := parseHeader(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseHeader(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseHeader(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseHeader: whatever is accepted is a valid header that survives a
// round trip through the "Name: value" form, and no error repeats the input
// (it may hold a secret).
func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{"X-A: b", "X-A=b", "a:b=c", "=", ":", "X: \t", "k=v:w", "Coder-Session-Token=x", "X-A: \x7f", "sec ret"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHeader(s)
		if err != nil {
			if len(s) > 8 && strings.Contains(err.Error(), s) {
				t.Fatalf("the error repeats the input: %v", err)
			}
			return
		}
		if !httpguts.ValidHeaderFieldName(h.Name) || !httpguts.ValidHeaderFieldValue(h.Value) {
			t.Fatalf("accepted an invalid header %q", h)
		}
		if h.Value != strings.Trim(h.Value, " \t") {
			t.Fatalf("value %q keeps surrounding blanks", h.Value)
		}
		again, err := parseHeader(h.Name + ": " + h.Value)
		if err != nil || again != h {
			t.Fatalf("round trip of %q: %q, %v", h, again, err)
		}
	})
}

// FuzzParseHeaderList: CODER_HEADER never panics and yields only valid
// headers.
func FuzzParseHeaderList(f *testing.F) {
	for _, s := range []string{"", "X-A=1", `X-A=1,"Cookie: a=1, b=2"`, "X-A=1\nX-B=2", `"unterminated`, ",,", `a="b"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hs, err := parseHeaderList(s)
		if err != nil {
			return
		}
		for _, h := range hs {
			if !httpguts.ValidHeaderFieldName(h.Name) || !httpguts.ValidHeaderFieldValue(h.Value) {
				t.Fatalf("accepted an invalid header %q from %q", h, s)
			}
		}
	})
}
