// Package dlhost drives scripts/dlhost.c, the small C program that loads
// libcodervpn with dlopen exactly as the macOS NetworkExtension does, in its
// "serve" mode: commands go over a SOCK_SEQPACKET socket with fds attached
// (SCM_RIGHTS), so the C process receives fds of its own, hands them to
// coderStartVPN and closes them, as a careful host may. It is the one way
// this project runs the C host: the CLI's dylib backend (`codervpn up
// --backend dylib`, `codervpn demo`), the tests of the real shared library
// and the benchmarks. It is Linux-only, like its users.
package dlhost
