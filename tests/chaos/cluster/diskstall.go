package cluster

import (
	"errors"
	"fmt"
	"os"
)

// ErrNoFaultHooks: the cluster was not started with Config.FaultHooks, so its replicas have
// no disk-stall hook to switch.
var ErrNoFaultHooks = errors.New("cluster: replicas started without fault hooks")

// StallDisk makes replica id's write-ahead log stop completing fsyncs, as a hung disk does:
// it creates the replica's control file (Node.DiskStallFile), and the replica's WAL
// (wal.StallFS, armed by --fault-disk-stall-file) holds every sync while the file exists.
// The replica keeps running, reading and sending; whatever waits for its disk waits.
func (c *Cluster) StallDisk(id int) error {
	n := c.Node(id)
	if n.DiskStallFile == "" {
		return fmt.Errorf("cluster: stall the disk of replica %d: %w", id, ErrNoFaultHooks)
	}
	if err := os.WriteFile(n.DiskStallFile, nil, 0o644); err != nil {
		return fmt.Errorf("cluster: stall the disk of replica %d: %w", id, err)
	}
	return nil
}

// ReleaseDisk ends a StallDisk: the control file is removed and the replica's waiting syncs
// go on within a few milliseconds. Releasing a disk that is not stalled does nothing.
func (c *Cluster) ReleaseDisk(id int) error {
	n := c.Node(id)
	if n.DiskStallFile == "" {
		return fmt.Errorf("cluster: release the disk of replica %d: %w", id, ErrNoFaultHooks)
	}
	if err := os.Remove(n.DiskStallFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cluster: release the disk of replica %d: %w", id, err)
	}
	return nil
}

// ReleaseDisks releases every replica's disk (a no-op without fault hooks).
func (c *Cluster) ReleaseDisks() error {
	var errs []error
	for _, n := range c.nodes {
		if n.DiskStallFile != "" {
			errs = append(errs, c.ReleaseDisk(n.ID))
		}
	}
	return errors.Join(errs...)
}
