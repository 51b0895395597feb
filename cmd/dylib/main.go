// Command dylib is libcodervpn: built with -buildmode=c-shared it becomes
// libcodervpn.dylib (macOS NetworkExtension) or libcodervpn.so (Linux) and
// codervpn.h. It holds only the exported functions; the tunnels live in
// internal/abi's Registry, and the return codes below are abi.Codes (its
// tests check these #defines against the table). See README.md, "For Swift
// integrators".
package main

/*
#include <stdint.h>

// Return codes of coderStartVPN and coderStopVPN. coderStartVPN returns a
// handle >= 0 on success; coderStopVPN returns 0.

// An internal error (a caught panic); the call had no effect.
#define CODERVPN_ERR_INTERNAL (-1)
// read_fd is negative, closed, or not open for reading.
#define CODERVPN_ERR_BAD_READ_FD (-2)
// write_fd is negative, closed, or not open for writing.
#define CODERVPN_ERR_BAD_WRITE_FD (-3)
// tun_fd is closed or not open read-write, or negative other than -1
// (-1 means: take StartRequest.tunnel_file_descriptor).
#define CODERVPN_ERR_BAD_TUN_FD (-4)
// CODERVPN_MAX_TUNNELS tunnels already run in this process.
#define CODERVPN_ERR_TOO_MANY_TUNNELS (-5)
// coderStopVPN of a handle never returned, or already stopped.
#define CODERVPN_ERR_UNKNOWN_HANDLE (-6)
// The tunnel could not be created (for example the process is out of fds).
#define CODERVPN_ERR_START_FAILED (-7)

// How many tunnels may run at once in one process.
#define CODERVPN_MAX_TUNNELS 8

// The library must never be dlclose'd: a Go runtime cannot be unloaded.

// Lets cgo declare coderVPNVersion as returning const char *.
typedef const char codervpn_const_char;
*/
import "C"

import (
	"os"
	"runtime"
	"runtime/debug"
	"unsafe"

	"github.com/codervpn/codervpn/internal/abi"
	"github.com/codervpn/codervpn/internal/buildinfo"
	"github.com/codervpn/codervpn/internal/memlimit"
)

// registry holds every tunnel this process started through the C ABI.
var registry abi.Registry

// defaultMemoryLimit is the floor of the Go runtime's soft memory limit in
// a host that did not choose one. A packet-tunnel extension on iOS is killed
// at 50 MiB; with a soft limit below that the collector works harder as the
// heap nears it instead of letting garbage pile up to twice the live heap.
// The limit is governed (internal/memlimit): once the live heap itself
// outgrows the floor, as with a user of a couple of thousand agents, the
// limit follows it with a quarter of headroom, because a fixed limit under
// the live heap makes the collector run back to back for nothing.
// A host sets its own fixed limit by putting GOMEMLIMIT (e.g. "64MiB", or
// "off") in the environment before it loads the library.
const defaultMemoryLimit = 40 << 20

func init() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		memlimit.Govern(defaultMemoryLimit)
	}
}

// version is allocated once and never freed: callers may keep the pointer.
var version = (*C.codervpn_const_char)(unsafe.Pointer(C.CString(buildinfo.Version)))

// coderStartVPN starts a tunnel on duplicates of the three fds and returns its
// handle (>= 0) at once, or a negative CODERVPN_ERR_* code. The caller keeps
// its fds and may close them after the call.
//
// The parameter names are the header's, hence not Go's usual style.
//
//export coderStartVPN
func coderStartVPN(tun_fd, read_fd, write_fd C.int32_t) (rc C.int32_t) { //nolint:revive
	defer recoverTo(&rc)
	return C.int32_t(registry.Start(int(tun_fd), int(read_fd), int(write_fd)))
}

// coderStopVPN stops the tunnel, closes every fd the library holds for it,
// waits for its goroutines and hands the memory it used back to the system.
// It returns 0, or CODERVPN_ERR_UNKNOWN_HANDLE.
//
//export coderStopVPN
func coderStopVPN(handle C.int32_t) (rc C.int32_t) {
	defer recoverTo(&rc)
	rc = C.int32_t(registry.Stop(int32(handle)))
	if rc == 0 {
		releaseMemory()
	}
	return rc
}

// releaseMemory returns a stopped engine's memory to the system. The host
// process outlives many tunnels (the library cannot be unloaded), and the
// engine's packet buffers sit in sync.Pools, which a collection only moves
// to a victim cache: the first GC retires them, the second (inside
// FreeOSMemory) frees them and returns the pages. Stopping is rare, so the
// few milliseconds are well spent.
func releaseMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// coderVPNVersion returns the library's version, a static string.
//
//export coderVPNVersion
func coderVPNVersion() *C.codervpn_const_char {
	return version
}

// recoverTo keeps a Go panic from crossing into the host: the call returns
// CODERVPN_ERR_INTERNAL instead.
func recoverTo(rc *C.int32_t) {
	if recover() != nil {
		*rc = C.int32_t(abi.CodeInternal)
	}
}

func main() {}
