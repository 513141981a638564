// Command mpaxos runs one replica of an mpaxos cluster: `mpaxos serve --help` lists the flags.
// The wiring lives in package pipeline; this file parses flags, reports errors in one line
// and handles signals.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mpaxos/mpaxos/pipeline"
)

// stopTimeout bounds a clean shutdown after SIGTERM/SIGINT.
const stopTimeout = 10 * time.Second

func main() {
	os.Exit(run(os.Args[1:]))
}

// fail prints err as one line on stderr and returns the exit status.
func fail(err error) int {
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	fmt.Fprintf(os.Stderr, "mpaxos: %s\n", msg)
	var u *usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

func run(args []string) int {
	if len(args) == 0 {
		return fail(usagef("missing command: try 'mpaxos serve --help'"))
	}
	switch args[0] {
	case "serve":
		return serve(args[1:])
	case "-h", "--help", "help":
		fmt.Fprint(os.Stderr, "usage: mpaxos serve [flags]  (mpaxos serve --help lists them)\n")
		return 0
	}
	return fail(usagef("unknown command %q: try 'mpaxos serve --help'", args[0]))
}

func serve(args []string) int {
	o, err := parseServe(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fs := newServeFlags(&serveOptions{})
		fs.SetOutput(os.Stderr)
		fmt.Fprint(os.Stderr, serveUsage)
		fs.PrintDefaults()
		return 0
	}
	if err != nil {
		return fail(err)
	}
	if !o.fsync {
		fmt.Fprintln(os.Stderr, "mpaxos: warning: --fsync=false: acknowledged commands can be lost if the machine crashes")
	}
	if o.faultDiskStallFile != "" {
		fmt.Fprintf(os.Stderr, "mpaxos: warning: fault hook armed: the write-ahead log's fsyncs wait while %s exists\n", o.faultDiskStallFile)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	node, err := pipeline.Start(o.cfg)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("mpaxos: replica %d serving on %s\n", o.cfg.ID, node.Addr())
	if a := node.AdminAddr(); a != "" {
		fmt.Fprintf(os.Stderr, "mpaxos: admin on http://%s/ (/metrics, /debug/pprof/, /debug/latency)\n", a)
	}
	select {
	case <-ctx.Done():
	case <-node.Done():
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := node.Stop(stopCtx); err != nil {
		return fail(err)
	}
	return 0
}
