package wal

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind (writer, segment preparer,
// appenders blocked on a full queue).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
