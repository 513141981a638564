package client

import (
	"testing"

	"go.uber.org/goleak"
)

// Every Client goroutine (writer, readers, reconnect watchers) must end by Close. The
// exactly-once tests run a real replica, whose gnet worker pool (ants) lives for the whole
// process: ignored, as in pipeline's tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"))
}
