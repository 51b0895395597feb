package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCoderLoginDiscovery: `up` with no flags finds the Coder CLI's login
// by the CLI's own rules, and each way it can fail is one line saying
// what to do.
func TestCoderLoginDiscovery(t *testing.T) {
	t.Parallel()
	write := func(dir string, files map[string]string) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	root := t.TempDir()
	full := map[string]string{"url": "https://coder.example.com\n", "session": " tok-123\n"}
	explicit := write(filepath.Join(root, "explicit"), full)
	home := filepath.Join(root, "home")
	write(filepath.Join(home, ".config", "coderv2"), full)
	xdg := filepath.Join(root, "xdg")
	write(filepath.Join(xdg, "coderv2"), map[string]string{"url": "https://xdg.example.com", "session": "tok-x"})
	noSession := write(filepath.Join(root, "nosession"), map[string]string{"url": "https://coder.example.com"})
	unreadable := write(filepath.Join(root, "unreadable"), full)
	if err := os.Chmod(filepath.Join(unreadable, "session"), 0); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		env        []string
		args       []string
		wantURL    string
		wantToken  string
		wantErr    string
		rootCanRun bool // root reads files whatever their mode
	}{
		{name: "CODER_CONFIG_DIR", env: []string{"CODER_CONFIG_DIR", explicit, "HOME", home}, wantURL: "https://coder.example.com", wantToken: "tok-123"},
		{name: "default directory", env: []string{"HOME", home}, wantURL: "https://coder.example.com", wantToken: "tok-123"},
		{name: "XDG_CONFIG_HOME", env: []string{"HOME", home, "XDG_CONFIG_HOME", xdg}, wantURL: "https://xdg.example.com", wantToken: "tok-x"},
		{name: "url flag matching the login", env: []string{"HOME", home}, args: []string{"--url", "https://coder.example.com/"}, wantURL: "https://coder.example.com/", wantToken: "tok-123"},
		{name: "url flag of another deployment", env: []string{"HOME", home}, args: []string{"--url", "https://other.example.com"}, wantErr: "no session token: pass --token or set CODER_SESSION_TOKEN"},
		{name: "missing", env: []string{"HOME", filepath.Join(root, "nobody")}, wantErr: "no Coder login found in " + filepath.Join(root, "nobody", ".config", "coderv2") + ": run `coder login <url>` first, or pass --url and --token"},
		{name: "no HOME", env: nil, wantErr: "HOME is not set"},
		{name: "url without session", env: []string{"CODER_CONFIG_DIR", noSession}, wantErr: "holds no session: run `coder login https://coder.example.com` again, or pass --token"},
		{name: "unreadable", env: []string{"CODER_CONFIG_DIR", unreadable}, wantErr: "permission denied", rootCanRun: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.rootCanRun && os.Geteuid() == 0 {
				t.Skip("root reads a file of mode 0")
			}
			cfg, err := parseUpFlags(tt.args, envOf(tt.env...), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %v, want one line containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.URL.String() != tt.wantURL || cfg.Token != tt.wantToken {
				t.Fatalf("login %s %q, want %s %q", cfg.URL, cfg.Token, tt.wantURL, tt.wantToken)
			}
		})
	}
}

func TestUpModeAndSocket(t *testing.T) {
	t.Parallel()
	base := []string{"--url", "https://c.example", "--token", "t"}
	tests := []struct {
		name       string
		args, env  []string
		foreground bool
		socket     string
	}{
		{name: "service by default", args: base, socket: defaultSocket},
		{name: "CODERVPN_SOCKET", args: base, env: []string{"CODERVPN_SOCKET", "/tmp/x.sock"}, socket: "/tmp/x.sock"},
		{name: "socket flag wins", args: append(base, "--socket", "/a"), env: []string{"CODERVPN_SOCKET", "/b"}, socket: "/a"},
		{name: "foreground flag", args: append(base, "--foreground"), foreground: true, socket: defaultSocket},
		{name: "netns means foreground", args: append(base, "--netns", "x"), foreground: true, socket: defaultSocket},
		{name: "tun-name means foreground", args: append(base, "--tun-name", "x0"), foreground: true, socket: defaultSocket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseUpFlags(tt.args, envOf(tt.env...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Foreground != tt.foreground || cfg.Socket != tt.socket {
				t.Fatalf("foreground %v socket %q, want %v %q", cfg.Foreground, cfg.Socket, tt.foreground, tt.socket)
			}
		})
	}
}
