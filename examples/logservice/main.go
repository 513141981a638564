// Command logservice is a small append-only log service over HTTP built on the embedded
// mpaxos sequencer: run three instances and append through any of them. See README.md.
//
//	logservice --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//	    --http 127.0.0.1:8001 --data /tmp/logservice-1
package main

import (
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/mpaxos/mpaxos"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "logservice:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("logservice", flag.ContinueOnError)
	id := fs.Uint("id", 0, "this instance's replica id (one of --peers)")
	peers := fs.String("peers", "", "every replica as id=host:port, comma-separated")
	httpAddr := fs.String("http", "127.0.0.1:8001", "HTTP address to serve the log on")
	data := fs.String("data", "", "data directory (write-ahead log and snapshots)")
	secret := fs.String("secret", os.Getenv("LOGSERVICE_SECRET"), "cluster secret, at least 16 bytes (or LOGSERVICE_SECRET)")
	clusterID := fs.Uint64("cluster-id", 1, "cluster id, the same on every instance")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *secret == "" {
		*secret = "logservice-demo-secret" // a demo default: set your own in production
	}
	cfg := mpaxos.DefaultConfig()
	cfg.ID = uint32(*id)
	cfg.ClusterID = *clusterID
	cfg.Secret = []byte(*secret)
	cfg.DataDir = *data
	var err error
	if cfg.Peers, err = parsePeers(*peers); err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := startService(cfg, *httpAddr)
	if err != nil {
		return err
	}
	log.Printf("logservice: instance %d: HTTP on %s, replica on %s", cfg.ID, s.Addr(), cfg.Peers[cfg.ID])
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return s.Close()
}

// parsePeers parses "1=host:port,2=host:port".
func parsePeers(s string) (map[uint32]string, error) {
	peers := map[uint32]string{}
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		idText, addr, ok := strings.Cut(part, "=")
		id, err := strconv.ParseUint(idText, 10, 32)
		if !ok || err != nil || addr == "" {
			return nil, fmt.Errorf("--peers: %q is not id=host:port", part)
		}
		peers[uint32(id)] = addr
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("--peers: empty")
	}
	return peers, nil
}
