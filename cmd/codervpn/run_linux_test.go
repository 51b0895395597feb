package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestRunUsage checks the exit codes and messages of the command line as a
// whole, without doing anything that needs privileges.
func TestRunUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		code     int
		out, err string
	}{
		{"no command", nil, exitUsage, "", "codervpn puts your Coder workspaces"},
		{"unknown command", []string{"sideways"}, exitUsage, "", `unknown command "sideways"`},
		{"help", []string{"--help"}, exitOK, "codervpn up", ""},
		{"up help", []string{"up", "--help"}, exitOK, "-tun-name", ""},
		{"up usage error", []string{"up"}, exitUsage, "", "codervpn up: no deployment URL"},
		{"daemon without fds", []string{"daemon"}, exitUsage, "", "--rpc-read-fd and --rpc-write-fd are required"},
		{"daemon same fds", []string{"daemon", "--rpc-read-fd", "7", "--rpc-write-fd", "7"}, exitUsage, "", "must be the two different pipe ends"},
		{"daemon closed fd", []string{"daemon", "--rpc-read-fd", "900", "--rpc-write-fd", "901"}, exitUsage, "", "--rpc-read-fd 900: not an open file descriptor"},
		{"daemon bad env", []string{"daemon"}, exitUsage, "", `CODER_VPN_DAEMON_RPC_READ_HANDLE="x" is not a file descriptor number`},
		{"vpn-daemon alone", []string{"vpn-daemon"}, exitUsage, "", "Usage: codervpn vpn-daemon run"},
		{"vpn-daemon unknown", []string{"vpn-daemon", "start"}, exitUsage, "", `codervpn vpn-daemon: unknown subcommand "start"`},
		{"vpn-daemon run help", []string{"vpn-daemon", "run", "--help"}, exitOK, "-rpc-read-handle", ""},
		{"vpn-daemon run without fds", []string{"vpn-daemon", "run"}, exitUsage, "",
			"codervpn vpn-daemon run: --rpc-read-fd and --rpc-write-fd are required"},
		{"vpn-daemon run closed fd", []string{"vpn-daemon", "run", "--rpc-read-fd", "900", "--rpc-write-fd", "901"}, exitUsage, "",
			"--rpc-read-fd 900: not an open file descriptor"},
		{"demo bad bytes", []string{"demo", "--bytes", "0"}, exitUsage, "", "--bytes 0: choose between"},
		{"version", []string{"version"}, exitOK, "codervpn dev (CoderVPN protocol 1.3", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := envOf()
			if tc.name == "daemon bad env" {
				env = envOf("CODER_VPN_DAEMON_RPC_READ_HANDLE", "x")
			}
			var stdout, stderr bytes.Buffer
			code := run(tc.args, env, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.err) {
				t.Fatalf("run(%q) = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q",
					tc.args, code, stdout.String(), stderr.String(), tc.code, tc.out, tc.err)
			}
		})
	}
}
