package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// header is one extra HTTP header the tunnel sends on every request to the
// deployment (a proxy's authentication, for instance).
type header struct {
	Name, Value string
}

// parseHeader reads one --header argument. The Coder CLI writes headers as
// "Name=value"; curl and most people write "Name: value". Both are accepted:
// neither ':' nor '=' may appear in a header name, so whichever comes first
// ends the name, and the value may contain either. Whitespace around the name
// and the value is dropped, as HTTP itself does.
func parseHeader(s string) (header, error) {
	i := strings.IndexAny(s, ":=")
	if i < 0 {
		// The argument is not echoed: it may be a bare token pasted by mistake.
		return header{}, errors.New("a header has neither ':' nor '=' after its name: write it as 'Name: value'")
	}
	h := header{Name: strings.TrimSpace(s[:i]), Value: strings.Trim(s[i+1:], " \t")}
	if h.Name == "" {
		return header{}, errors.New("a header has no name before its ':' or '=': write it as 'Name: value'")
	}
	if !httpguts.ValidHeaderFieldName(h.Name) {
		return header{}, fmt.Errorf("header name %q is not a valid HTTP header name", h.Name)
	}
	if !httpguts.ValidHeaderFieldValue(h.Value) {
		// Never echo the value: headers often carry credentials.
		return header{}, fmt.Errorf("the value of header %s contains characters a header cannot carry (a newline or control character?)", h.Name)
	}
	// The tunnel sets the session token header itself, from --token; a
	// second copy would be silently replaced, so say so instead.
	if http.CanonicalHeaderKey(h.Name) == "Coder-Session-Token" {
		return header{}, errors.New("pass the session token with --token (or CODER_SESSION_TOKEN), not as a --header")
	}
	return h, nil
}

// parseHeaderList reads the CODER_HEADER environment variable: comma
// separated headers, with CSV quoting for values that contain commas
// ("X-A=1","Cookie: a=1, b=2"), the way the Coder CLI reads list variables.
// Newlines separate headers too.
func parseHeaderList(s string) ([]header, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	r := csv.NewReader(strings.NewReader(s))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	records, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("cannot read the list of headers: %w", err)
	}
	var out []header
	for _, rec := range records {
		for _, field := range rec {
			if strings.TrimSpace(field) == "" {
				continue
			}
			h, err := parseHeader(field)
			if err != nil {
				return nil, err
			}
			out = append(out, h)
		}
	}
	return out, nil
}

// headerFlag is the repeatable --header flag. The flag package quotes the
// raw argument in its errors, which would print a header's secret value, so
// Set keeps the first error for the caller to report instead.
type headerFlag struct {
	headers []header
	err     error
}

// String implements flag.Value. It names headers without their values, which
// may be secrets, so that usage output and errors never print them.
func (f *headerFlag) String() string {
	if f == nil {
		return ""
	}
	names := make([]string, 0, len(f.headers))
	for _, h := range f.headers {
		names = append(names, h.Name)
	}
	return strings.Join(names, ", ")
}

// Set implements flag.Value.
func (f *headerFlag) Set(s string) error {
	h, err := parseHeader(s)
	if err != nil {
		if f.err == nil {
			f.err = fmt.Errorf("--header: %w", err)
		}
		return nil
	}
	f.headers = append(f.headers, h)
	return nil
}

// protoHeaders converts headers for the StartRequest.
func protoHeaders(hs []header) []*vpnpb.StartRequest_Header {
	out := make([]*vpnpb.StartRequest_Header, 0, len(hs))
	for _, h := range hs {
		out = append(out, &vpnpb.StartRequest_Header{Name: h.Name, Value: h.Value})
	}
	return out
}
