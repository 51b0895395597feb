//go:build linux || darwin

package main

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// TestParseDaemonFlagsForms checks every spelling Coder Desktop's builds use
// for the pipe fds: the macOS flags and variables, the Linux and Windows
// ones, and ours; a flag wins over the environment.
func TestParseDaemonFlagsForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args, env []string
		r, w      int
	}{
		{"macOS flags", []string{"--rpc-read-fd", "7", "--rpc-write-fd", "9"}, nil, 7, 9},
		{"macOS flags with =", []string{"--rpc-read-fd=7", "--rpc-write-fd=9"}, nil, 7, 9},
		{"Linux flags", []string{"--rpc-read-handle", "7", "--rpc-write-handle", "9"}, nil, 7, 9},
		{"macOS variables", nil, []string{"CODER_VPN_DAEMON_RPC_READ_FD", "7", "CODER_VPN_DAEMON_RPC_WRITE_FD", "9"}, 7, 9},
		{"Linux variables", nil, []string{"CODER_VPN_DAEMON_RPC_READ_HANDLE", "7", "CODER_VPN_DAEMON_RPC_WRITE_HANDLE", "9"}, 7, 9},
		{"mixed", []string{"--rpc-write-handle", "9"}, []string{"CODER_VPN_DAEMON_RPC_READ_FD", "7"}, 7, 9},
		{"both variables agree", nil, []string{"CODER_VPN_DAEMON_RPC_READ_FD", "7", "CODER_VPN_DAEMON_RPC_READ_HANDLE", "7",
			"CODER_VPN_DAEMON_RPC_WRITE_FD", "0"}, 7, 0},
		{"flag wins over variable", []string{"--rpc-read-fd", "7", "--rpc-write-fd", "9"},
			[]string{"CODER_VPN_DAEMON_RPC_READ_FD", "11", "CODER_VPN_DAEMON_RPC_WRITE_HANDLE", "12"}, 7, 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseDaemonFlags(vpnDaemonRunCmd, tc.args, envOf(tc.env...), io.Discard)
			if err != nil || cfg.ReadFD != tc.r || cfg.WriteFD != tc.w || cfg.TunFD != -1 {
				t.Fatalf("parse %q with %q = %+v, %v; want read %d, write %d, tun -1", tc.args, tc.env, cfg, err, tc.r, tc.w)
			}
		})
	}
}

// TestParseDaemonFlagsErrors checks that each mistake is a usage error that
// names the flag or variable.
func TestParseDaemonFlagsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args, env []string
		want      string
	}{
		{"nothing", nil, nil, "--rpc-read-fd and --rpc-write-fd are required"},
		{"write missing", []string{"--rpc-read-fd", "7"}, nil, "--rpc-read-fd and --rpc-write-fd are required"},
		{"same fd", []string{"--rpc-read-handle", "7", "--rpc-write-fd", "7"}, nil, "they must be the two different pipe ends"},
		{"variables disagree", []string{"--rpc-write-fd", "9"},
			[]string{"CODER_VPN_DAEMON_RPC_READ_FD", "7", "CODER_VPN_DAEMON_RPC_READ_HANDLE", "8"},
			"CODER_VPN_DAEMON_RPC_READ_FD=7 and CODER_VPN_DAEMON_RPC_READ_HANDLE=8 disagree"},
		{"variable not a number", []string{"--rpc-read-fd", "7"}, []string{"CODER_VPN_DAEMON_RPC_WRITE_FD", "pipe"},
			`CODER_VPN_DAEMON_RPC_WRITE_FD="pipe" is not a file descriptor number`},
		{"negative variable", []string{"--rpc-read-fd", "7"}, []string{"CODER_VPN_DAEMON_RPC_WRITE_HANDLE", "-4"},
			`CODER_VPN_DAEMON_RPC_WRITE_HANDLE="-4" is not a file descriptor number`},
		{"argument", []string{"--rpc-read-fd", "7", "--rpc-write-fd", "9", "now"}, nil, "`vpn-daemon run` takes only flags"},
		{"unknown flag", []string{"--rpc-fd", "7"}, nil, "flag provided but not defined: -rpc-fd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseDaemonFlags(vpnDaemonRunCmd, tc.args, envOf(tc.env...), io.Discard)
			var ue *usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parse %q with %q: %v; want a usage error with %q", tc.args, tc.env, err, tc.want)
			}
		})
	}
}
