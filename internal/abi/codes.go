package abi

import "fmt"

// MaxTunnels bounds the tunnels one process runs through a Registry
// (CODERVPN_MAX_TUNNELS). A host runs one; a handful covers tests and
// reconnect overlaps. A host that keeps starting without stopping is told
// so instead of exhausting fds.
const MaxTunnels = 8

// The return codes of a failed call. Handles are never negative, so any
// negative value is an error.
const (
	CodeInternal       int32 = -1
	CodeBadReadFD      int32 = -2
	CodeBadWriteFD     int32 = -3
	CodeBadTunFD       int32 = -4
	CodeTooManyTunnels int32 = -5
	CodeUnknownHandle  int32 = -6
	CodeStartFailed    int32 = -7
	CodeBadMemoryLimit int32 = -8
	CodeBadLogLevel    int32 = -9
	CodeBadCrashFD     int32 = -10
)

// Code is one return code of the C ABI.
type Code struct {
	Value int32
	// Name is its #define in codervpn.h.
	Name string
	// Brief is a few words for a one-line error ("bad read fd").
	Brief string
	// Meaning is the sentence the README's table gives it.
	Meaning string
}

// Codes is every return code, in the order of their values. The header's
// #defines (cmd/dylib) and the README's table are checked against it by
// this package's tests; the CLI names codes with Lookup.
var Codes = []Code{
	{CodeInternal, "CODERVPN_ERR_INTERNAL", "internal error",
		"an internal error (a caught panic); the call had no effect"},
	{CodeBadReadFD, "CODERVPN_ERR_BAD_READ_FD", "bad read fd",
		"`read_fd` is negative, closed, or not open for reading"},
	{CodeBadWriteFD, "CODERVPN_ERR_BAD_WRITE_FD", "bad write fd",
		"`write_fd` is negative, closed, or not open for writing"},
	{CodeBadTunFD, "CODERVPN_ERR_BAD_TUN_FD", "bad TUN fd",
		"`tun_fd` is closed, not open read-write, or negative other than -1"},
	{CodeTooManyTunnels, "CODERVPN_ERR_TOO_MANY_TUNNELS", "too many tunnels",
		fmt.Sprintf("%d tunnels already run in this process", MaxTunnels)},
	{CodeUnknownHandle, "CODERVPN_ERR_UNKNOWN_HANDLE", "unknown handle",
		"stop of a handle never returned, or already stopped"},
	{CodeStartFailed, "CODERVPN_ERR_START_FAILED", "start failed",
		"the tunnel could not be created (e.g. out of fds)"},
	{CodeBadMemoryLimit, "CODERVPN_ERR_BAD_MEMORY_LIMIT", "bad memory limit",
		"`coderSetMemoryLimit`: `bytes` is 0 or more but under 1 MiB (`CODERVPN_MEMORY_LIMIT_MIN`); nothing changed"},
	{CodeBadLogLevel, "CODERVPN_ERR_BAD_LOG_LEVEL", "bad log level",
		"`coderSetLogger`: `min_level` is not a `CODERVPN_LOG_*` level; nothing changed"},
	{CodeBadCrashFD, "CODERVPN_ERR_BAD_CRASH_FD", "bad crash output fd",
		"`coderSetCrashOutput`: `fd` is closed, not open for writing, or negative other than -1; nothing changed"},
}

// Lookup returns the code with value v, if it is one.
func Lookup(v int32) (Code, bool) {
	for _, c := range Codes {
		if c.Value == v {
			return c, true
		}
	}
	return Code{}, false
}
