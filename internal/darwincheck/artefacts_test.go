package darwincheck

import (
	"bytes"
	"debug/macho"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestArtefacts checks what scripts/build-darwin.sh built, where `make
// check-darwin` says: CODERVPN_DARWIN_DIR (build/darwin), the version it
// stamped (CODERVPN_DARWIN_VERSION) and the header the Linux build ships
// (CODERVPN_LINUX_HEADER: cmd/dylib/codervpn.h). Plain `go test ./...`
// builds nothing for macOS and skips it; under make a missing or wrong file
// fails.
func TestArtefacts(t *testing.T) {
	dir := os.Getenv("CODERVPN_DARWIN_DIR")
	if dir == "" {
		t.Skip("CODERVPN_DARWIN_DIR is not set: `make check-darwin` builds the macOS artefacts and runs this test on them")
	}
	version := os.Getenv("CODERVPN_DARWIN_VERSION")
	if version == "" {
		t.Fatal("CODERVPN_DARWIN_VERSION is not set: the version the artefacts were stamped with")
	}
	artefacts := []struct {
		file string
		want Artefact
	}{
		{"libcodervpn.dylib", Artefact{Type: macho.TypeDylib, Cpus: []macho.Cpu{macho.CpuArm64, macho.CpuAmd64}, Version: version, Library: true}},
		{"codervpn-arm64", Artefact{Type: macho.TypeExec, Cpus: []macho.Cpu{macho.CpuArm64}}},
		{"codervpn-amd64", Artefact{Type: macho.TypeExec, Cpus: []macho.Cpu{macho.CpuAmd64}}},
	}
	for _, a := range artefacts {
		t.Run(a.file, func(t *testing.T) {
			path := filepath.Join(dir, a.file)
			slices, universal, err := ReadFile(path)
			if err != nil {
				t.Fatalf("read %s: %v", path, err)
			}
			a.want.Name = a.file
			for _, err := range Check(a.want, slices, universal) {
				t.Error(err)
			}
			for _, s := range slices {
				t.Logf("%v: %v, macOS %v+, %d exports, loads %v", s.Cpu, s.Type, s.MinOS, len(s.Exports), s.Libraries)
			}
		})
	}
	t.Run("codervpn.h", func(t *testing.T) {
		linux := os.Getenv("CODERVPN_LINUX_HEADER")
		if linux == "" {
			t.Fatal("CODERVPN_LINUX_HEADER is not set: the codervpn.h of the Linux build")
		}
		want, err := os.ReadFile(linux)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "codervpn.h"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("the darwin codervpn.h differs from the Linux one, first at line %d", firstDifference(got, want))
		}
	})
}

func firstDifference(a, b []byte) int {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return i + 1
		}
	}
	return min(len(al), len(bl)) + 1
}
