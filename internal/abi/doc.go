// Package abi is the Go side of libcodervpn's C ABI: Registry, the table of
// tunnels behind coderStartVPN and coderStopVPN (handles, the fds it
// duplicates, the limit), the process-wide settings a host makes by C call
// (SetMemoryLimit, SetCrashOutput; the log callback's queue is package
// internal/hostlog), and Codes, every value those calls return on
// failure, defined once. cmd/dylib holds only the exported functions; the
// header's #defines, the README's table and the CLI's words for a code are
// checked against, or read from, Codes.
package abi
