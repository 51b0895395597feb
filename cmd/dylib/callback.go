package main

/*
#include <stdlib.h>
#include "codervpn.h"

// Set while this thread runs the host's log callback, so that a
// coderSetLogger called from inside it does not wait for itself. These
// definitions are static and in a file without //export: cgo copies the
// preamble of a file with exports into its generated header.
static _Thread_local int codervpn_in_log_callback;

static void codervpn_call_log(coderLogCallback cb, void *ctx, int32_t level, const char *message) {
	codervpn_in_log_callback = 1;
	cb(ctx, level, message);
	codervpn_in_log_callback = 0;
}

static int codervpn_inside_log_callback(void) { return codervpn_in_log_callback; }
*/
import "C"

import "unsafe"

// callLog calls the host's callback with a C copy of message, freed after
// the call: the message is only valid during it.
func callLog(cb C.coderLogCallback, ctx unsafe.Pointer, level int32, message string) {
	cs := C.CString(message)
	defer C.free(unsafe.Pointer(cs))
	C.codervpn_call_log(cb, ctx, C.int32_t(level), cs)
}

// inLogCallback reports whether the calling thread is inside the host's log
// callback (a callback that calls coderSetLogger).
func inLogCallback() bool { return C.codervpn_inside_log_callback() != 0 }
