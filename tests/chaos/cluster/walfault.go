package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The WAL format as wal/doc.go draws it; only what is needed to find batch boundaries.
const (
	walSegmentSuffix     = ".wal"
	walSegmentHeaderSize = 32
	walBatchHeaderSize   = 20
)

var walCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrNoWAL: the replica's data directory holds no WAL segment (or too few batches for the
// requested damage).
var ErrNoWAL = errors.New("cluster: no WAL data to damage")

// walBatch is one batch's byte extent in a segment file.
type walBatch struct {
	start, end int64
	firstIndex uint64
	records    uint32
}

// walSegments lists the *.wal files under dir in name order (names are zero-padded indexes).
func walSegments(dir string) ([]string, error) {
	var segments []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), walSegmentSuffix) {
			segments = append(segments, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: list WAL segments in %s: %w", dir, err)
	}
	sort.Strings(segments)
	return segments, nil
}

// scanWALBatches returns the whole, valid batches at the start of a segment, stopping at the
// zero fill or the first damaged batch. It checks batch headers, not record checksums.
func scanWALBatches(data []byte) []walBatch {
	var batches []walBatch
	off := int64(walSegmentHeaderSize)
	for off+walBatchHeaderSize <= int64(len(data)) {
		h := data[off : off+walBatchHeaderSize]
		sum := binary.LittleEndian.Uint32(h)
		body := int64(binary.LittleEndian.Uint32(h[4:]))
		records := binary.LittleEndian.Uint32(h[8:])
		if body == 0 || records == 0 || crc32.Checksum(h[4:], walCastagnoli) != sum {
			break
		}
		end := off + walBatchHeaderSize + body
		if end > int64(len(data)) {
			break
		}
		batches = append(batches, walBatch{start: off, end: end, firstIndex: binary.LittleEndian.Uint64(h[12:]), records: records})
		off = end
	}
	return batches
}

// TearWAL simulates a crash in the middle of the final write of replica id (which must be
// stopped): after the last whole batch of the last segment it writes the beginning of a batch
// that never finished — a valid header announcing more bytes than follow, or a few bytes of a
// header. No acknowledged record is touched; recovery must cut the torn batch and start.
// It returns a description of the damage.
func (c *Cluster) TearWAL(id int, rng *rand.Rand) (string, error) {
	if s := c.State(id); s != Stopped {
		return "", fmt.Errorf("cluster: tear WAL of replica %d: it is %s: %w", id, s, ErrState)
	}
	segments, err := walSegments(c.Node(id).DataDir)
	if err != nil {
		return "", err
	}
	if len(segments) == 0 {
		return "", fmt.Errorf("cluster: tear WAL of replica %d: %w", id, ErrNoWAL)
	}
	last := segments[len(segments)-1]
	data, err := os.ReadFile(last)
	if err != nil {
		return "", fmt.Errorf("cluster: tear WAL: %w", err)
	}
	batches := scanWALBatches(data)
	end := int64(walSegmentHeaderSize)
	nextIndex := uint64(0)
	if len(batches) > 0 {
		b := batches[len(batches)-1]
		end, nextIndex = b.end, b.firstIndex+uint64(b.records)
	}
	var torn []byte
	var what string
	if rng.IntN(2) == 0 {
		body := 64 + rng.IntN(4096)
		header := make([]byte, walBatchHeaderSize)
		binary.LittleEndian.PutUint32(header[4:], uint32(body))
		binary.LittleEndian.PutUint32(header[8:], 1)
		binary.LittleEndian.PutUint64(header[12:], nextIndex)
		binary.LittleEndian.PutUint32(header, crc32.Checksum(header[4:], walCastagnoli))
		partial := make([]byte, rng.IntN(body))
		for i := range partial {
			partial[i] = byte(rng.IntN(256))
		}
		torn = append(header, partial...)
		what = fmt.Sprintf("batch header announcing %d bytes, %d present", body, len(partial))
	} else {
		torn = make([]byte, 1+rng.IntN(walBatchHeaderSize-1))
		for i := range torn {
			torn[i] = byte(1 + rng.IntN(255))
		}
		what = fmt.Sprintf("%d bytes of a batch header", len(torn))
	}
	f, err := os.OpenFile(last, os.O_WRONLY, 0)
	if err != nil {
		return "", fmt.Errorf("cluster: tear WAL: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteAt(torn, end); err != nil {
		return "", fmt.Errorf("cluster: tear WAL: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("cluster: tear WAL: %w", err)
	}
	return fmt.Sprintf("torn write at %s offset %d after %d whole batches: %s", filepath.Base(last), end, len(batches), what), nil
}

// CorruptWAL flips bytes inside a batch of replica id (which must be stopped) that a later
// batch vouches for: in a segment other than the last when there is one, else in any batch of
// the last segment but the final one. Recovery must refuse to start with an error naming the
// file and offset. It returns the damaged file, the offset and a description.
func (c *Cluster) CorruptWAL(id int, rng *rand.Rand) (file string, offset int64, what string, err error) {
	if s := c.State(id); s != Stopped {
		return "", 0, "", fmt.Errorf("cluster: corrupt WAL of replica %d: it is %s: %w", id, s, ErrState)
	}
	segments, err := walSegments(c.Node(id).DataDir)
	if err != nil {
		return "", 0, "", err
	}
	type candidate struct {
		file  string
		batch walBatch
	}
	var candidates []candidate
	for i, seg := range segments {
		data, err := os.ReadFile(seg)
		if err != nil {
			return "", 0, "", fmt.Errorf("cluster: corrupt WAL: %w", err)
		}
		batches := scanWALBatches(data)
		if i == len(segments)-1 && len(batches) > 0 {
			batches = batches[:len(batches)-1] // the final batch could pass for a torn write
		}
		for _, b := range batches {
			candidates = append(candidates, candidate{seg, b})
		}
	}
	if len(candidates) == 0 {
		return "", 0, "", fmt.Errorf("cluster: corrupt WAL of replica %d: no batch with a later one after it in %d segments: %w", id, len(segments), ErrNoWAL)
	}
	pick := candidates[rng.IntN(len(candidates))]
	// Inside the batch body (the records), so the header still parses and only a record
	// checksum can catch it.
	offset = pick.batch.start + walBatchHeaderSize + rng.Int64N(pick.batch.end-pick.batch.start-walBatchHeaderSize)
	f, err := os.OpenFile(pick.file, os.O_RDWR, 0)
	if err != nil {
		return "", 0, "", fmt.Errorf("cluster: corrupt WAL: %w", err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, offset); err != nil {
		return "", 0, "", fmt.Errorf("cluster: corrupt WAL: %w", err)
	}
	b[0] ^= byte(1 + rng.IntN(255))
	if _, err := f.WriteAt(b, offset); err != nil {
		return "", 0, "", fmt.Errorf("cluster: corrupt WAL: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", 0, "", fmt.Errorf("cluster: corrupt WAL: %w", err)
	}
	what = fmt.Sprintf("flipped a byte at %s offset %d, inside batch [%d, %d) of %d batches checked", filepath.Base(pick.file), offset, pick.batch.start, pick.batch.end, len(candidates))
	return pick.file, offset, what, nil
}
