package service

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: every Server
// was closed, so none may be left.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
