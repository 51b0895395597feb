package vpnlib

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// speaker, tunnel and test peer must be fully shut down by the test that
// started it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
