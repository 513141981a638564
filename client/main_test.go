package client

import (
	"testing"

	"go.uber.org/goleak"
)

// Every Client goroutine (writer, readers, reconnect watchers) must end by Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
