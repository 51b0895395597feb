package vpnlib

import (
	"io"
	"log"
)

// discardLog silences net/http's server error log (TLS handshake failures
// the tests provoke on purpose).
func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }
