/*
 * codervpn.h: the C interface of libcodervpn (libcodervpn.dylib on macOS,
 * libcodervpn.so on Linux), the CoderVPN tunnel core.
 *
 * This header is written by hand and kept stable; it is not cgo's output.
 * It uses plain C types only and compiles as C, Objective-C, C++ and
 * Objective-C++ (a test compiles it in all four, together with the header
 * cgo generates from the Go exports, so the two cannot drift apart).
 *
 * A host loads the library, hands it the tunnel device and a pipe pair with
 * coderStartVPN, and then speaks the CoderVPN protocol over the pipes. See
 * README.md, "For Swift integrators". Every function is safe to call from
 * any thread, and no Go panic crosses into the host: a function that
 * caught one returns CODERVPN_ERR_INTERNAL.
 *
 * Never dlclose the library: a Go runtime cannot be unloaded.
 *
 * A host that looks the functions up with dlsym may define
 * CODERVPN_NO_PROTOTYPES before including this header: it then declares
 * only the constants and the *_fn function-pointer types.
 */
#ifndef CODERVPN_H
#define CODERVPN_H

#include <stdint.h>

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wnullability-extension"
#pragma clang assume_nonnull begin
#define CODERVPN_NULLABLE _Nullable
#define CODERVPN_NONNULL _Nonnull
#else
#define CODERVPN_NULLABLE
#define CODERVPN_NONNULL
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes. A handle is >= 0; every failure is negative. */

/* An internal error (a caught panic); the call had no effect. */
#define CODERVPN_ERR_INTERNAL (-1)
/* read_fd is negative, closed, or not open for reading. */
#define CODERVPN_ERR_BAD_READ_FD (-2)
/* write_fd is negative, closed, or not open for writing. */
#define CODERVPN_ERR_BAD_WRITE_FD (-3)
/* tun_fd is closed or not open read-write, or negative other than -1. */
#define CODERVPN_ERR_BAD_TUN_FD (-4)
/* CODERVPN_MAX_TUNNELS tunnels already run in this process. */
#define CODERVPN_ERR_TOO_MANY_TUNNELS (-5)
/* coderStopVPN of a handle never returned, or already stopped. */
#define CODERVPN_ERR_UNKNOWN_HANDLE (-6)
/* The tunnel could not be created (for example the process is out of fds). */
#define CODERVPN_ERR_START_FAILED (-7)
/* coderSetMemoryLimit: bytes is 0 or more but under CODERVPN_MEMORY_LIMIT_MIN. */
#define CODERVPN_ERR_BAD_MEMORY_LIMIT (-8)
/* coderSetLogger: min_level is not a CODERVPN_LOG_* level. */
#define CODERVPN_ERR_BAD_LOG_LEVEL (-9)
/* coderSetCrashOutput: fd is closed, not open for writing, or negative other than -1. */
#define CODERVPN_ERR_BAD_CRASH_FD (-10)

/* How many tunnels may run at once in one process: every handle that
 * coderStopVPN has not yet freed counts, running or ended. */
#define CODERVPN_MAX_TUNNELS 8

/* coderSetMemoryLimit: the library's default limit. */
#define CODERVPN_MEMORY_LIMIT_DEFAULT (-1)
/* coderSetMemoryLimit: no limit at all. */
#define CODERVPN_MEMORY_LIMIT_OFF INT64_MAX
/* coderSetMemoryLimit: the smallest fixed limit accepted (1 MiB). */
#define CODERVPN_MEMORY_LIMIT_MIN (1048576)

/* Log levels: the numbers of the CoderVPN protocol's Log.Level. */
#define CODERVPN_LOG_DEBUG 0
#define CODERVPN_LOG_INFO 1
#define CODERVPN_LOG_WARN 2
#define CODERVPN_LOG_ERROR 3
#define CODERVPN_LOG_CRITICAL 4
#define CODERVPN_LOG_FATAL 5

/*
 * coderLogCallback receives one log record: context is what the host
 * passed to coderSetLogger, level a CODERVPN_LOG_* level, message one line
 * of UTF-8 text (at most 16 KiB), valid only during the call: copy it to
 * keep it. It is called on a thread of the library's, one record at a
 * time, and must return promptly (records queue behind it; when the queue
 * is full they are dropped, and a later record says how many).
 */
typedef void (*coderLogCallback)(void *CODERVPN_NULLABLE context, int32_t level, const char *message);

/* The functions' types, for a host that finds them with dlsym. */
typedef int32_t (*coderStartVPN_fn)(int32_t tun_fd, int32_t read_fd, int32_t write_fd);
typedef int32_t (*coderStopVPN_fn)(int32_t handle);
typedef const char *CODERVPN_NONNULL (*coderVPNVersion_fn)(void);
typedef int64_t (*coderSetMemoryLimit_fn)(int64_t bytes);
typedef int32_t (*coderSetLogger_fn)(void *CODERVPN_NULLABLE context, coderLogCallback CODERVPN_NULLABLE callback,
				     int32_t min_level);
typedef int32_t (*coderSetCrashOutput_fn)(int32_t fd);

#ifndef CODERVPN_NO_PROTOTYPES

/*
 * coderStartVPN starts a tunnel and returns its handle (>= 0) at once,
 * without waiting for the handshake, or a negative CODERVPN_ERR_* code.
 * read_fd is the end the library reads ManagerMessages from, write_fd the
 * end it writes TunnelMessages to, tun_fd the utun (macOS) or tun (Linux)
 * device; tun_fd -1 means: take StartRequest.tunnel_file_descriptor. The
 * library duplicates every fd: the caller keeps its own and may close them
 * once this returns.
 */
int32_t coderStartVPN(int32_t tun_fd, int32_t read_fd, int32_t write_fd);

/*
 * coderStopVPN stops the tunnel, closes every fd the library holds for it,
 * waits for its goroutines, frees the handle and hands the memory it used
 * back to the system. It returns 0, or CODERVPN_ERR_UNKNOWN_HANDLE. It
 * returns within about a second even when the host has stopped reading the
 * tunnel->manager pipe: a write blocked on it is abandoned.
 */
int32_t coderStopVPN(int32_t handle);

/* coderVPNVersion returns the library's version: a static string, never
 * freed. */
const char *coderVPNVersion(void);

/*
 * coderSetMemoryLimit sets the Go runtime's soft memory limit, for the
 * whole process. bytes >= CODERVPN_MEMORY_LIMIT_MIN: that fixed limit;
 * CODERVPN_MEMORY_LIMIT_OFF: none; any negative value
 * (CODERVPN_MEMORY_LIMIT_DEFAULT): back to the library's default, a limit
 * of 40 MiB that follows a live heap outgrowing it (or GOMEMLIMIT, if the
 * process started with it in its environment). It returns the limit in
 * force before the call, in bytes, or CODERVPN_ERR_BAD_MEMORY_LIMIT for
 * 0 up to CODERVPN_MEMORY_LIMIT_MIN - 1 (nothing changed).
 */
int64_t coderSetMemoryLimit(int64_t bytes);

/*
 * coderSetLogger sends the library's own logs (what the CLI prints on
 * stderr: why a session ended, a failed handshake, a write that timed out,
 * the engine's records; redacted of the API token, header values and URL
 * credentials) at min_level and above to callback, with context. They are
 * the same records the manager gets as Log messages, and also those that
 * could not reach it. A NULL callback turns it off. When this returns, the
 * previous callback is not running on another thread and will never be
 * called again, so its context may be freed. Returns 0, or
 * CODERVPN_ERR_BAD_LOG_LEVEL (nothing changed).
 */
int32_t coderSetLogger(void *CODERVPN_NULLABLE context, coderLogCallback CODERVPN_NULLABLE callback,
		       int32_t min_level);

/*
 * coderSetCrashOutput makes the Go runtime write the trace of a fatal error
 * (an unrecovered panic in any goroutine of the library, which ends the
 * process) to fd as well as to stderr: open a file in the extension's
 * container and read it on the next start. The runtime keeps a duplicate
 * of fd, so the caller may close its own at once. -1 turns it off. Returns
 * 0, or CODERVPN_ERR_BAD_CRASH_FD (nothing changed).
 */
int32_t coderSetCrashOutput(int32_t fd);

#endif /* CODERVPN_NO_PROTOTYPES */

#ifdef __cplusplus
}
#endif

#if defined(__clang__)
#pragma clang assume_nonnull end
#pragma clang diagnostic pop
#endif

#endif /* CODERVPN_H */
