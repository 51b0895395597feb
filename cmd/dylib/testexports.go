//go:build codervpn_testexports

package main

// Exports only the tests' build of the library has (go build -tags
// codervpn_testexports): what a host cannot make the library do on purpose.

/*
#include <stdint.h>
*/
import "C"

import (
	"context"

	"cdr.dev/slog/v3"
)

// coderTestCrash panics on a new goroutine of the library, as a bug in a
// tunnel goroutine would: the host process dies, and the trace goes to
// stderr and to coderSetCrashOutput's fd.
//
//export coderTestCrash
func coderTestCrash() {
	go func() { panic("codervpn test crash: an unrecovered panic in a library goroutine") }()
}

// coderTestLog logs n records (message "test record", field i) through the
// logger every tunnel gets, as fast as it can, and returns.
//
//export coderTestLog
func coderTestLog(n C.int32_t) {
	log := registry.Logger
	for i := range int(n) {
		log.Info(context.Background(), "test record", slog.F("i", i))
	}
}
