package mpaxos_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/mpaxos/mpaxos"
)

// exampleConfig is a one-node cluster on a free loopback port in a temporary directory (a
// real deployment lists three or five replicas in Peers, one per machine).
func exampleConfig() (mpaxos.Config, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	dir, err := os.MkdirTemp("", "mpaxos-example-")
	if err != nil {
		log.Fatal(err)
	}
	cfg := mpaxos.DefaultConfig()
	cfg.ID = 1
	cfg.Peers = map[uint32]string{1: addr}
	cfg.ClusterID = 42
	cfg.Secret = []byte("example-secret-of-16+-bytes")
	cfg.DataDir = dir
	cfg.Runtime.TickInterval = 2 * time.Millisecond
	cfg.Runtime.WALSegmentBytes = 1 << 20 // a new WAL zero-fills its first segment: keep starts fast
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg, func() { _ = os.RemoveAll(dir) }
}

func ExampleStart() {
	cfg, cleanup := exampleConfig()
	defer cleanup()
	node, err := mpaxos.Start(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	end, err := node.Barrier(ctx) // waits for a leader, confirms the log's end with a quorum
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("commands in the log:", end)
	// Output: commands in the log: 0
}

func ExampleNode_Propose() {
	cfg, cleanup := exampleConfig()
	defer cleanup()
	node, err := mpaxos.Start(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cmd := range []string{"create", "update", "delete"} {
		offset, err := node.Propose(ctx, []byte(cmd))
		if err != nil {
			// ErrTimeout and ErrClosed are ambiguous: the command may have been applied.
			log.Fatal(err)
		}
		fmt.Println(offset, cmd)
	}
	// Output:
	// 0 create
	// 1 update
	// 2 delete
}

func ExampleNode_Subscribe() {
	cfg, cleanup := exampleConfig()
	defer cleanup()
	node, err := mpaxos.Start(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := node.Subscribe(0)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	proposed := make(chan struct{})
	go func() {
		defer close(proposed)
		for _, cmd := range []string{"a", "b", "c"} {
			if _, err := node.Propose(ctx, []byte(cmd)); err != nil {
				log.Print(err)
			}
		}
	}()
	for i := 0; i < 3; i++ {
		e, err := sub.Next(ctx) // waits for the next command in log order
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("offset %d: %s\n", e.Offset, e.Payload)
	}
	<-proposed
	// Output:
	// offset 0: a
	// offset 1: b
	// offset 2: c
}

func ExampleNode_Read() {
	cfg, cleanup := exampleConfig()
	defer cleanup()
	node, err := mpaxos.Start(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offset, err := node.Propose(ctx, []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	e, err := node.Read(offset)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d: %s\n", e.Offset, e.Payload)
	// Output: 0: hello
}
