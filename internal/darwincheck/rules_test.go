package darwincheck

import (
	"debug/macho"
	"strings"
	"testing"
)

const testVersion = "v1.2.3"

func goodPlist(version string) []byte {
	return []byte(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>CFBundleIdentifier</key>
	<string>com.coder.codervpn.lib</string>
	<key>CFBundleShortVersionString</key>
	<string>` + version + `</string>
	<key>CFBundleVersion</key>
	<string>` + version + `</string>
</dict>
</plist>
`)
}

// goodLibrarySlice is a slice of libcodervpn.dylib that passes every rule.
func goodLibrarySlice(cpu macho.Cpu) *Slice {
	exports := []Export{{Name: "__cgoexp_0123456789ab_coderStartVPN"}, {Name: "_crosscall2"}, {Name: "_x_cgo_init"}}
	for _, n := range LibraryABI {
		exports = append(exports, Export{Name: n})
	}
	return &Slice{
		Cpu: cpu, Type: macho.TypeDylib,
		HasBuildVersion: true, Platform: platformMacOS, MinOS: MinOS,
		InstallName: InstallName,
		Libraries:   append([]string(nil), AllowedLibraries...),
		Exports:     exports,
		InfoPlist:   goodPlist(testVersion),
		Signature:   SignatureValid,
	}
}

var library = Artefact{Name: "libcodervpn.dylib", Type: macho.TypeDylib,
	Cpus: []macho.Cpu{macho.CpuArm64, macho.CpuAmd64}, Version: testVersion, Library: true}

// TestCheckCatches breaks one thing at a time in a good universal library
// and wants the check to say what.
func TestCheckCatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		breakIt   func(arm, amd *Slice) []*Slice
		universal bool
		want      string
	}{
		{"nothing wrong", func(arm, amd *Slice) []*Slice { return []*Slice{arm, amd} }, true, ""},
		{"thin file", func(arm, _ *Slice) []*Slice { return []*Slice{arm} }, false, "is a thin file"},
		{"x86_64 slice missing", func(arm, _ *Slice) []*Slice { return []*Slice{arm} }, true, "has no CpuAmd64 slice"},
		{"extra slice", func(arm, amd *Slice) []*Slice {
			return []*Slice{arm, amd, goodLibrarySlice(macho.Cpu386)}
		}, true, "has a Cpu386 slice it should not have"},
		{"an executable", func(arm, amd *Slice) []*Slice { arm.Type = macho.TypeExec; return []*Slice{arm, amd} }, true,
			"CpuArm64 slice: Mach-O type Exec, want Dylib"},
		{"extra framework", func(arm, amd *Slice) []*Slice {
			amd.Libraries = append(amd.Libraries, "/System/Library/Frameworks/Network.framework/Versions/A/Network")
			return []*Slice{arm, amd}
		}, true, "loads /System/Library/Frameworks/Network.framework/Versions/A/Network, which is not one of"},
		{"no libSystem", func(arm, amd *Slice) []*Slice { arm.Libraries = arm.Libraries[1:]; return []*Slice{arm, amd} }, true,
			"does not load /usr/lib/libSystem.B.dylib"},
		{"macOS 11", func(arm, amd *Slice) []*Slice { arm.MinOS = 11 << 16; return []*Slice{arm, amd} }, true,
			"LC_BUILD_VERSION minos 11.0, want 12.0"},
		{"no build version", func(arm, amd *Slice) []*Slice { amd.HasBuildVersion = false; return []*Slice{arm, amd} }, true,
			"has no LC_BUILD_VERSION"},
		{"old version load command too", func(arm, amd *Slice) []*Slice { amd.HasVersionMin = true; return []*Slice{arm, amd} }, true,
			"also has an LC_VERSION_MIN_MACOSX"},
		{"re-export", func(arm, amd *Slice) []*Slice {
			arm.Exports = append(arm.Exports, Export{Name: "_x_cgo_init_again", Reexport: true})
			return []*Slice{arm, amd}
		}, true, "exports 1 symbols outside its ABI and Go's cgo glue: _x_cgo_init_again"},
		{"iOS", func(arm, amd *Slice) []*Slice { arm.Platform = 2; return []*Slice{arm, amd} }, true, "platform 2, want 1"},
		{"no plist", func(arm, amd *Slice) []*Slice { amd.InfoPlist = nil; return []*Slice{arm, amd} }, true,
			"CpuAmd64 slice: has no __TEXT,__info_plist section"},
		{"plist of another version", func(arm, amd *Slice) []*Slice { arm.InfoPlist = goodPlist("v9"); return []*Slice{arm, amd} }, true,
			`CFBundleShortVersionString is "v9", want "v1.2.3"`},
		{"plist not XML", func(arm, amd *Slice) []*Slice { arm.InfoPlist = []byte("\x00\x00\x00"); return []*Slice{arm, amd} }, true,
			"__TEXT,__info_plist: not well-formed XML"},
		{"ABI function missing", func(arm, amd *Slice) []*Slice {
			arm.Exports = arm.Exports[:len(arm.Exports)-1]
			return []*Slice{arm, amd}
		}, true,
			"does not export _coderSetCrashOutput"},
		{"compiler_rt exported", func(arm, amd *Slice) []*Slice {
			amd.Exports = append(amd.Exports, Export{Name: "_memcpy", Weak: true}, Export{Name: "___udivti3", Weak: true})
			return []*Slice{arm, amd}
		}, true, "exports 2 functions of compiler_rt or the C library (ziglang/zig#15107): ___udivti3, _memcpy"},
		{"weak export", func(arm, amd *Slice) []*Slice {
			amd.Exports = append(amd.Exports, Export{Name: "_fmaxf128", Weak: true})
			return []*Slice{arm, amd}
		}, true, "exports 1 weak definitions, as a linker's own compiler_rt would: _fmaxf128"},
		{"stray export", func(arm, amd *Slice) []*Slice {
			arm.Exports = append(arm.Exports, Export{Name: "_some_c_helper"})
			return []*Slice{arm, amd}
		}, true, "exports 1 symbols outside its ABI and Go's cgo glue: _some_c_helper"},
		{"install name", func(arm, amd *Slice) []*Slice { arm.InstallName = "build/libcodervpn.dylib"; return []*Slice{arm, amd} }, true,
			`install name "build/libcodervpn.dylib", want "@rpath/libcodervpn.dylib"`},
		{"not stripped", func(arm, amd *Slice) []*Slice { amd.LocalSymbols = 40000; return []*Slice{arm, amd} }, true,
			"is not stripped: 40000 local symbols"},
		{"debug information", func(arm, amd *Slice) []*Slice { amd.HasDWARF = true; return []*Slice{arm, amd} }, true,
			"it carries debug information"},
		{"arm64 unsigned", func(arm, amd *Slice) []*Slice { arm.Signature = Unsigned; return []*Slice{arm, amd} }, true,
			"CpuArm64 slice: is unsigned: Apple silicon runs no arm64 code without a valid signature"},
		{"stale signature", func(arm, amd *Slice) []*Slice { amd.Signature = SignatureInvalid; return []*Slice{arm, amd} }, true,
			"CpuAmd64 slice: is signed, but the signature does not match the file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			arm, amd := goodLibrarySlice(macho.CpuArm64), goodLibrarySlice(macho.CpuAmd64)
			amd.Signature = Unsigned // x86_64 needs none
			errs := Check(library, tc.breakIt(arm, amd), tc.universal)
			if tc.want == "" {
				for _, err := range errs {
					t.Error(err)
				}
				return
			}
			for _, err := range errs {
				if strings.Contains(err.Error(), tc.want) {
					return
				}
			}
			t.Fatalf("no error with %q; got %v", tc.want, errs)
		})
	}
}

// TestCheckCommand checks the rules for the daemon binaries: no plist, no
// exports required, one slice.
func TestCheckCommand(t *testing.T) {
	t.Parallel()
	cmd := Artefact{Name: "codervpn-arm64", Type: macho.TypeExec, Cpus: []macho.Cpu{macho.CpuArm64}}
	s := goodLibrarySlice(macho.CpuArm64)
	s.Type, s.InfoPlist, s.InstallName, s.Exports = macho.TypeExec, nil, "", nil
	if errs := Check(cmd, []*Slice{s}, false); len(errs) > 0 {
		t.Fatalf("a good command: %v", errs)
	}
	s.InfoPlist = goodPlist(testVersion)
	errs := Check(cmd, []*Slice{s}, true)
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "is a universal file") ||
		!strings.Contains(errs[1].Error(), "has a __TEXT,__info_plist section it should not have") {
		t.Fatalf("a universal command with a plist: %v", errs)
	}
}
