package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const modulePath = "github.com/codervpn/codervpn"

// goListDeps runs `go list -deps` on pkgs and returns each package with
// its direct imports.
func goListDeps(t *testing.T, pkgs ...string) map[string][]string {
	t.Helper()
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}"}, pkgs...)
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		deps[fields[0]] = fields[1:]
	}
	return deps
}

// No package of ours that the shipped binaries link imports package
// testing: test doubles (vpntest) take a small TB interface instead, as
// net/http/httptest needs none. Third-party packages that Coder's SDK and
// tailnet pull in still do (quartz, serpent, dd-trace-go, terraform's
// helpers); they are listed in the log, and are not ours to change.
func TestBinariesLinkNoTestingOfOurs(t *testing.T) {
	var theirs []string
	for pkg, imports := range goListDeps(t, modulePath+"/cmd/codervpn", modulePath+"/cmd/dylib") {
		if !slices.Contains(imports, "testing") {
			continue
		}
		if strings.HasPrefix(pkg, modulePath+"/") {
			t.Errorf("%s, linked into codervpn or libcodervpn, imports package testing", pkg)
		} else {
			theirs = append(theirs, pkg)
		}
	}
	slices.Sort(theirs)
	t.Logf("third-party packages in the binaries that import testing: %s", strings.Join(theirs, ", "))
}

// The protocol (speaker) and the host's side of it (manager) link neither
// the tunnel's engine nor its logging library: a host links the protocol
// alone.
func TestProtocolLinksNoEngine(t *testing.T) {
	for _, pkg := range []string{modulePath + "/vpnlib/speaker", modulePath + "/vpnlib/manager"} {
		for dep := range goListDeps(t, pkg) {
			for _, banned := range []string{"tailscale.com", "github.com/coder/", "cdr.dev/slog", modulePath + "/vpnlib\x00"} {
				if strings.HasPrefix(dep+"\x00", banned) {
					t.Errorf("%s links %s", pkg, dep)
				}
			}
		}
	}
}

// The bench's baseline, Coder's own tunnel (bench/internal/codertunnel and
// the module's vpn package it runs), is never linked into what ships: the
// binaries carry our tunnel only.
func TestBinariesLinkNoCoderTunnel(t *testing.T) {
	for dep := range goListDeps(t, modulePath+"/cmd/codervpn", modulePath+"/cmd/dylib") {
		if dep == modulePath+"/bench/internal/codertunnel" || dep == "github.com/coder/coder/v2/vpn" {
			t.Errorf("the shipped binaries link %s, the bench's baseline", dep)
		}
	}
}

// The profiler windows (internal/profwindow) are for the profiling build
// of the library only (-tags codervpn_profile): what ships has no
// environment variable that starts a CPU profile or a trace.
func TestBinariesLinkNoProfiler(t *testing.T) {
	for dep := range goListDeps(t, modulePath+"/cmd/codervpn", modulePath+"/cmd/dylib") {
		if dep == modulePath+"/internal/profwindow" {
			t.Errorf("the shipped binaries link %s, the profiling build's windows", dep)
		}
	}
}
