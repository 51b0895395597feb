package darwincheck

import (
	"debug/macho"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// MinOS is the oldest macOS the artefacts support (README.md).
const MinOS Version = 12 << 16

// AllowedLibraries are the only libraries the artefacts may load. Each is
// on every macOS since 12, and each has a stub in scripts/darwin/sdk for
// the Linux link. A dependency that brings another one (a framework Go's
// standard library does not need) fails the check: it needs a stub, a
// look at whether the NetworkExtension's sandbox allows it, and this list.
var AllowedLibraries = []string{
	"/usr/lib/libSystem.B.dylib",
	"/usr/lib/libresolv.9.dylib", // net: the resolver's configuration
	"/System/Library/Frameworks/CoreFoundation.framework/Versions/A/CoreFoundation", // runtime/cgo, crypto/x509
	"/System/Library/Frameworks/Security.framework/Versions/A/Security",             // crypto/x509: the system's roots
}

// LibraryABI is what the library's C ABI exports (codervpn.h).
var LibraryABI = []string{
	"_coderStartVPN", "_coderStopVPN", "_coderVPNVersion",
	"_coderSetMemoryLimit", "_coderSetLogger", "_coderSetCrashOutput",
}

// InstallName is the library's LC_ID_DYLIB: found through the host's
// rpath, as a library embedded in an app or extension bundle is.
const InstallName = "@rpath/libcodervpn.dylib"

// otherExports are exported by every Go c-shared library, whatever the
// linker (Xcode's included): cgo's runtime glue, which dyld never looks
// up, and the //export functions of dependencies' cgo code. They are named
// one by one so that anything new is noticed.
var otherExports = []string{
	"_crosscall1", "_crosscall2", "_x_crosscall2_ptr",
	"__cgo_panic", "__cgo_topofstack", "__cgo_yield", "__cgo_release_context",
	"__cgo_get_context_function", "__cgo_get_symbolizer_function", "__cgo_get_traceback_function",
	"__cgo_set_stacklo", "__cgo_sys_thread_start", "__cgo_try_pthread_create", "__cgo_wait_runtime_init_done",
	"_x_cgo_bindm", "_x_cgo_call_symbolizer_function", "_x_cgo_call_traceback_function", "_x_cgo_callers",
	"_x_cgo_getstackbound", "_x_cgo_init", "_x_cgo_notify_runtime_init_done", "_x_cgo_pthread_key_created",
	"_x_cgo_set_traceback_functions", "_x_cgo_setenv", "_x_cgo_sys_thread_create", "_x_cgo_thread_start",
	"_x_cgo_unsetenv",
	"_get_memory_info",      // github.com/prometheus/client_golang, through the coder module
	"_ddwafLogCallbackFnV4", // github.com/DataDog/go-libddwaf, through the coder module
}

// cgoWrapper matches the per-build names of the same glue: cgo's wrappers
// carry a hash of the package path.
var cgoWrapper = regexp.MustCompile(`^__cgo(exp)?_[0-9a-f]{12}_`)

// compilerRT names functions of compiler_rt and of the C library that a
// linker adding its own compiler_rt exports from a shared library
// (ziglang/zig#15107): if any is exported, the host's calls to memcpy and
// friends could bind to our copies.
var compilerRT = []string{
	"_memcpy", "_memmove", "_memset", "_memcmp", "_bzero", "_strlen",
	"_sin", "_cos", "_exp", "_log", "_pow", "_sqrt", "_fma", "_ceil", "_floor", "_trunc", "_round", "_fmod",
	"___udivti3", "___divti3", "___umodti3", "___modti3", "___multi3", "___muloti4",
	"___ashlti3", "___ashrti3", "___lshrti3", "___clzsi2", "___clzdi2", "___ctzdi2", "___popcountdi2",
	"___floatundidf", "___floattidf", "___fixdfti", "___fixunsdfti", "___extendhfsf2", "___truncsfhf2",
	"___chkstk_darwin", "___stack_chk_fail",
}

// Artefact says what one file is meant to be.
type Artefact struct {
	Name string
	// Type is the Mach-O type of every slice.
	Type macho.Type
	// Cpus are the slices, in any order; more than one means universal.
	Cpus []macho.Cpu
	// Version is what its Info.plist must say; empty: it has none.
	Version string
	// Library is true for libcodervpn.dylib: install name and exports.
	Library bool
}

// Check reads the slices of an artefact and returns every rule they break.
func Check(a Artefact, slices []*Slice, universal bool) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(a.Name+": "+format, args...))
	}
	if len(a.Cpus) > 1 && !universal {
		fail("is a thin file; want a universal one with %v", a.Cpus)
	}
	if len(a.Cpus) == 1 && universal {
		fail("is a universal file; want a thin %v one", a.Cpus[0])
	}
	var got []macho.Cpu
	for _, s := range slices {
		got = append(got, s.Cpu)
	}
	for _, c := range a.Cpus {
		if !containsCpu(got, c) {
			fail("has no %v slice (it has %v)", c, got)
		}
	}
	for _, c := range got {
		if !containsCpu(a.Cpus, c) {
			fail("has a %v slice it should not have", c)
		}
	}
	for _, s := range slices {
		for _, err := range checkSlice(a, s) {
			fail("%v slice: %v", s.Cpu, err)
		}
	}
	return errs
}

func containsCpu(list []macho.Cpu, c macho.Cpu) bool { return slices.Contains(list, c) }

func checkSlice(a Artefact, s *Slice) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.Type != a.Type {
		fail("Mach-O type %v, want %v", s.Type, a.Type)
	}
	switch {
	case !s.HasBuildVersion:
		fail("has no LC_BUILD_VERSION: the minimum macOS is unknown")
	case s.Platform != platformMacOS:
		fail("LC_BUILD_VERSION platform %d, want %d (macOS)", s.Platform, platformMacOS)
	case s.MinOS != MinOS:
		fail("LC_BUILD_VERSION minos %v, want %v", s.MinOS, MinOS)
	}
	if s.HasVersionMin {
		fail("also has an LC_VERSION_MIN_MACOSX, which contradicts LC_BUILD_VERSION")
	}
	if !slices.Contains(s.Libraries, AllowedLibraries[0]) {
		fail("does not load %s", AllowedLibraries[0])
	}
	for _, lib := range s.Libraries {
		if !slices.Contains(AllowedLibraries, lib) {
			fail("loads %s, which is not one of %v: a new dependency needs a stub in scripts/darwin/sdk, "+
				"a check that the NetworkExtension may load it on macOS %v, and an entry in AllowedLibraries", lib, AllowedLibraries, MinOS)
		}
	}
	if s.LocalSymbols > 0 {
		fail("is not stripped: %d local symbols", s.LocalSymbols)
	}
	if s.HasDWARF {
		fail("is not stripped: it carries debug information")
	}
	if s.Cpu == macho.CpuArm64 && s.Signature != SignatureValid {
		fail("is %v: Apple silicon runs no arm64 code without a valid signature (ad-hoc at least)", s.Signature)
	}
	if s.Cpu != macho.CpuArm64 && s.Signature == SignatureInvalid {
		fail("is %v", s.Signature)
	}
	errs = append(errs, checkPlist(a, s.InfoPlist)...)
	if a.Library {
		if s.InstallName != InstallName {
			fail("install name %q, want %q", s.InstallName, InstallName)
		}
		errs = append(errs, checkExports(s.Exports)...)
	}
	return errs
}

func checkPlist(a Artefact, data []byte) []error {
	if a.Version == "" {
		if data != nil {
			return []error{fmt.Errorf("has a __TEXT,__info_plist section it should not have")}
		}
		return nil
	}
	if data == nil {
		return []error{fmt.Errorf("has no __TEXT,__info_plist section: the host cannot read the library's version")}
	}
	kv, err := parsePlistStrings(data)
	if err != nil {
		return []error{fmt.Errorf("__TEXT,__info_plist: %w", err)}
	}
	var errs []error
	for key, want := range map[string]string{
		"CFBundleShortVersionString": a.Version,
		"CFBundleVersion":            a.Version,
		"CFBundleIdentifier":         "com.coder.codervpn.lib",
	} {
		if kv[key] != want {
			errs = append(errs, fmt.Errorf("__TEXT,__info_plist: %s is %q, want %q", key, kv[key], want))
		}
	}
	return errs
}

// checkExports wants the C ABI exported, and nothing but it and the Go glue
// every c-shared library has: in particular nothing of compiler_rt.
func checkExports(exports []Export) []error {
	var errs []error
	names := make(map[string]bool)
	for _, e := range exports {
		names[e.Name] = true
	}
	for _, want := range LibraryABI {
		if !names[want] {
			errs = append(errs, fmt.Errorf("does not export %s", want))
		}
	}
	var rt, weak, other []string
	for _, e := range exports {
		switch {
		case slices.Contains(compilerRT, e.Name):
			rt = append(rt, e.Name)
		case e.Weak:
			weak = append(weak, e.Name)
		case e.Reexport, !slices.Contains(LibraryABI, e.Name) && !slices.Contains(otherExports, e.Name) && !cgoWrapper.MatchString(e.Name):
			other = append(other, e.Name)
		}
	}
	if len(rt) > 0 {
		errs = append(errs, fmt.Errorf("exports %d functions of compiler_rt or the C library (ziglang/zig#15107): %s", len(rt), list(rt)))
	}
	if len(weak) > 0 {
		errs = append(errs, fmt.Errorf("exports %d weak definitions, as a linker's own compiler_rt would: %s", len(weak), list(weak)))
	}
	if len(other) > 0 {
		errs = append(errs, fmt.Errorf("exports %d symbols outside its ABI and Go's cgo glue: %s", len(other), list(other)))
	}
	return errs
}

// list shows at most ten names.
func list(names []string) string {
	slices.Sort(names)
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(", … (%d more)", len(names)-10)
	}
	return strings.Join(names, ", ")
}
