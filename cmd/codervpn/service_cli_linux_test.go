package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestServiceCommandLine: what is wrong with `codervpn service`'s command
// line or system is exit 2 with the fix.
func TestServiceCommandLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "missing group", args: []string{"--group", "cvpn-no-such-group"},
			want: "group \"cvpn-no-such-group\" does not exist: create it with `sudo groupadd --system cvpn-no-such-group`"},
		{name: "bad backend", args: []string{"--backend", "dylib"}, want: `--backend "dylib": choose inprocess or daemon`},
		{name: "bad TUN name", args: []string{"--tun-name", "a/b"}, want: "must not contain '/'"},
		{name: "argument", args: []string{"now"}, want: `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"service"}, tt.args...), envOf(), &stdout, &stderr)
			if code != exitUsage || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), exitUsage, tt.want)
			}
		})
	}
}
