//go:build !linux

package bench

import "syscall"

// childProcAttr: outside Linux there is no parent-death signal; Stop and the signal
// handler are the only teardown.
func childProcAttr() *syscall.SysProcAttr { return nil }
