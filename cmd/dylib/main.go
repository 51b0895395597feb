// Command dylib is libcodervpn: built with -buildmode=c-shared it becomes
// libcodervpn.dylib (macOS NetworkExtension) or libcodervpn.so (Linux). It
// holds only the exported functions; their interface is codervpn.h, written
// by hand and shipped instead of cgo's header. The preamble includes it, so
// the C compiler checks every export against its prototype when the
// library is built. The tunnels live in internal/abi's Registry, the
// return codes are abi.Codes. See README.md, "For Swift integrators".
package main

/*
#include <stdint.h>
#include "codervpn.h"

// Lets cgo declare coderVPNVersion as returning const char *.
typedef const char codervpn_const_char;
*/
import "C"

import (
	"runtime"
	"runtime/debug"
	"unsafe"

	"github.com/codervpn/codervpn/internal/abi"
	"github.com/codervpn/codervpn/internal/buildinfo"
	"github.com/codervpn/codervpn/internal/hostlog"
)

// logs is the host's log callback (coderSetLogger) behind every tunnel's
// local logger.
var logs hostlog.Dispatcher

// registry holds every tunnel this process started through the C ABI.
var registry = abi.Registry{Logger: logs.Logger()}

func init() { abi.InitMemoryLimit() }

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
	if endProfile != nil {
		endProfile()
	}
	rc = C.int32_t(registry.Stop(int32(handle)))
	if rc == 0 {
		releaseMemory()
	}
	return rc
}

// endProfile, set only in the profiling build (profile.go), ends its
// window at the first stop and waits until the files are written: a host
// may exit right after its stop, before the window would have ended.
var endProfile func()

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

// coderSetMemoryLimit sets the runtime's soft memory limit (negative: the
// library's default) and returns the previous one, or
// CODERVPN_ERR_BAD_MEMORY_LIMIT. A NetworkExtension cannot choose the
// environment it starts with, so GOMEMLIMIT is out of its reach.
//
//export coderSetMemoryLimit
func coderSetMemoryLimit(bytes C.int64_t) (rc C.int64_t) {
	defer recoverTo(&rc)
	return C.int64_t(abi.SetMemoryLimit(int64(bytes)))
}

// coderSetLogger sends the library's local logs at min_level and above to
// callback(context, level, message); a NULL callback turns that off.
//
//export coderSetLogger
func coderSetLogger(context unsafe.Pointer, callback C.coderLogCallback, min_level C.int32_t) (rc C.int32_t) { //nolint:revive
	defer recoverTo(&rc)
	// From inside the callback, the old callback is the caller: waiting
	// for it to return would wait for ever.
	wait := !inLogCallback()
	if callback == nil {
		logs.Set(nil, 0, wait)
		return 0
	}
	if !hostlog.ValidLevel(int32(min_level)) {
		return C.int32_t(abi.CodeBadLogLevel)
	}
	logs.Set(func(level int32, message string) { callLog(callback, context, level, message) }, int32(min_level), wait)
	return 0
}

// coderSetCrashOutput sends a fatal error's trace to fd as well as stderr;
// -1 turns it off.
//
//export coderSetCrashOutput
func coderSetCrashOutput(fd C.int32_t) (rc C.int32_t) {
	defer recoverTo(&rc)
	return C.int32_t(abi.SetCrashOutput(int(fd)))
}

// recoverTo keeps a Go panic from crossing into the host: the call returns
// CODERVPN_ERR_INTERNAL instead.
func recoverTo[T C.int32_t | C.int64_t](rc *T) {
	if recover() != nil {
		*rc = T(abi.CodeInternal)
	}
}

func main() {}
