package pipeline

import (
	"testing"

	"go.uber.org/goleak"
)

// Stop must end every goroutine a Node started (stages, netio, WAL writer, admin server).
// gnet's package-level worker pool (ants) lives for the whole process and is ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"))
}
