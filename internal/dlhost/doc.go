// Package dlhost drives scripts/dlhost.c, the small C program that loads
// libcodervpn with dlopen exactly as the macOS NetworkExtension does, in its
// "serve" mode: commands go over a SOCK_SEQPACKET socket with fds attached
// (SCM_RIGHTS), so the C process receives fds of its own, hands them to
// coderStartVPN and closes them, as a careful host may. Tests and benchmarks
// use it to exercise the real shared library in a real C process. It is
// Linux-only, like the tests that use it.
package dlhost
