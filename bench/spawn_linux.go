package bench

import "syscall"

// childProcAttr puts each replica in its own process group, so a Ctrl-C in the terminal
// reaches only mpaxos-bench (which then tears down in order), and asks the kernel to SIGKILL
// the replica if mpaxos-bench dies without tearing down.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
