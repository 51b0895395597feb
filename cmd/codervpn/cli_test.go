package main

import (
	"io"
	"strings"
	"testing"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// TestParseUpFlagsErrors checks that every mistake on the command line or in
// the environment is a usage error that says what to do.
func TestParseUpFlagsErrors(t *testing.T) {
	t.Parallel()
	base := []string{"--url", "https://coder.example.com", "--token", "tok"}
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"no URL", []string{"--token", "x"}, nil, "no deployment URL: pass --url https://coder.example.com or set CODER_URL"},
		{"URL without scheme", []string{"--url", "coder.example.com", "--token", "x"}, nil, "must start with https://"},
		{"ftp URL", []string{"--url", "ftp://coder.example.com", "--token", "x"}, nil, "must start with https://"},
		{"URL without host", []string{"--url", "https://", "--token", "x"}, nil, "has no host name"},
		{"unparsable URL", []string{"--url", "https://[::1", "--token", "x"}, nil, "is not a URL"},
		{"no token", []string{"--url", "https://c.example"}, nil, "no session token: pass --token or set CODER_SESSION_TOKEN"},
		{"blank token", []string{"--url", "https://c.example", "--token", "  "}, nil, "no session token"},
		{"token with newline", []string{"--url", "https://c.example", "--token", "a\nb"}, nil, "line break"},
		{"header without colon", append(base, "--header", "secretvalue"), nil, "--header: a header has neither ':' nor '='"},
		{"header bad name", append(base, "--header", "Bad Name: x"), nil, `header name "Bad Name" is not a valid HTTP header name`},
		{"header bad value", append(base, "--header", "X-A: a\x01b"), nil, "the value of header X-A contains characters"},
		{"token as header", append(base, "--header", "Coder-Session-Token: x"), nil, "pass the session token with --token"},
		{"bad CODER_HEADER", base, []string{"CODER_HEADER", "X-A=1,nocolon"}, "CODER_HEADER: a header has neither"},
		{"unbalanced CODER_HEADER quote", base, []string{"CODER_HEADER", `"X-A=1`}, "CODER_HEADER: cannot read the list of headers"},
		{"long TUN name", append(base, "--tun-name", "abcdefghijklmnop"), nil, "longer than the kernel's 15-byte limit"},
		{"TUN name with slash", append(base, "--tun-name", "a/b"), nil, "must not contain '/'"},
		{"empty TUN name", append(base, "--tun-name", ""), nil, "--tun-name must not be empty"},
		{"bad log level", append(base, "--log-level", "loud"), nil, `--log-level "loud": choose debug, info, warn or error`},
		{"bad backend", append(base, "--backend", "cloud"), nil, `--backend "cloud": choose inprocess, daemon or dylib`},
		{"lib without dylib", append(base, "--lib", "/x.so"), nil, "--lib and --dlhost only apply with --backend=dylib"},
		{"relative netns path", append(base, "--netns", "a/b"), nil, "--netns \"a/b\": give a namespace name"},
		{"positional argument", append(base, "extra"), nil, `unexpected argument "extra"`},
		{"unknown flag", append(base, "--verbose"), nil, "flag provided but not defined: -verbose"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseUpFlags(tc.args, envOf(tc.env...), io.Discard)
			ue, ok := err.(*usageError)
			if !ok || !strings.Contains(ue.Error(), tc.want) {
				t.Fatalf("error %v (%T), want a usage error containing %q", err, err, tc.want)
			}
			if strings.Contains(err.Error(), "secretvalue") {
				t.Fatalf("the error echoes a header's text: %v", err)
			}
		})
	}
}

func TestParseUpFlagsEnvAndDefaults(t *testing.T) {
	t.Parallel()
	env := envOf("CODER_URL", "https://env.example/coder", "CODER_SESSION_TOKEN", " envtok ",
		"CODER_HEADER", `X-A=1,"Cookie: a=1, b=2"`)
	cfg, err := parseUpFlags(nil, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL.String() != "https://env.example/coder" || cfg.Token != "envtok" || cfg.TunName != "coder0" ||
		cfg.Backend != backendInProcess || cfg.LogLevel.Name != "warn" || cfg.JSON || cfg.NetNS != "" {
		t.Fatalf("defaults from env: %+v", cfg)
	}
	want := []header{{"X-A", "1"}, {"Cookie", "a=1, b=2"}}
	if len(cfg.Headers) != 2 || cfg.Headers[0] != want[0] || cfg.Headers[1] != want[1] {
		t.Fatalf("headers %+v, want %+v", cfg.Headers, want)
	}
	// Flags win over the environment; --header replaces CODER_HEADER.
	cfg, err = parseUpFlags([]string{"--url", "http://flag.example", "--token", "flagtok", "--header", "X-B: 2",
		"--header", "X-C=3", "--netns", "demo", "--backend", "dylib", "--lib", "/l.so", "--log-level", "INFO", "--json"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL.Host != "flag.example" || cfg.Token != "flagtok" || len(cfg.Headers) != 2 || cfg.Headers[1] != (header{"X-C", "3"}) ||
		cfg.NetNS != "/run/netns/demo" || cfg.Lib != "/l.so" || cfg.LogLevel.Name != "info" || !cfg.JSON {
		t.Fatalf("flags: %+v", cfg)
	}
}
