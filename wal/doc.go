// Package wal is a segmented, group-committed write-ahead log of typed, keyed records.
//
// It knows nothing about what the records mean. A Record carries a Type byte, a Key (the
// caller's position, e.g. a slot number) and an opaque Payload. For the same Key a later
// record supersedes an earlier one: Replay yields every surviving record in append order and
// the caller keeps the last one it sees per Key (LatestByKey does that for small logs).
//
// # Writing
//
// Any number of goroutines call Append (returns once the records are durable) or AppendAsync
// (returns once the records are queued; done runs on the writer goroutine once they are
// durable). One writer goroutine takes everything queued since its last round, writes it with
// one write call and makes it durable with one fdatasync, then completes every waiter. The
// queue is bounded by Options.QueueRecordsMax and Options.QueueBytesMax (counting records
// queued and records being written); a full queue blocks appenders: that is the backpressure.
// The records of one Append or AppendAsync call land in one batch, so they survive a crash
// all together or not at all. After a write or fdatasync error the log is failed: that call
// and every later one return an error wrapping ErrFailed, because after a failed fdatasync
// the kernel may have dropped the dirty pages and nothing written since can be trusted.
//
// # Files
//
// Options.Dir holds the segments, spare files, a hard-state file and a lock file:
//
//	00000000000000000001.wal        segment whose first record has index 1
//	00000000000000004711.wal        next segment: its first record has index 4711
//	00000000000000000001.wal.spare  a truncated segment kept for reuse (not part of the log)
//	hardstate                       the last SaveHardState value, two alternating slots
//	LOCK                            flock'ed while a WAL is open
//
// Record indexes are internal: they start at 1 and increase by one per record; the next
// segment's name is the previous segment's first index plus its record count, which is how a
// missing or out-of-order segment is caught. A segment's blocks are written before it is
// used, because on ext4 an fdatasync after writing into fallocate'd, still "unwritten"
// extents also journals their conversion, and into written blocks it does not (measured
// here: fdatasync of a 32-64 KiB write took ~95 us instead of ~185 us, and ~40 us less CPU).
// Once the active segment is half full, a background goroutine readies the next one:
//
//   - a spare, if TruncateBefore left one: a removed segment renamed to <name>.spare instead
//     of deleted (at most Options.RecycledSegmentsMax of them). Its blocks hold its previous
//     life, which the salt (below) keeps from ever being read as records. Only its tail
//     beyond its sealed length is zero-filled. This costs no write at all in a log that
//     truncates, as snapshots make it do.
//   - otherwise a new file of SegmentBytes of zeros, fdatasync'ed, under prepared-N.tmp. That
//     writes every segment twice (measured: a fifth to a half of the WAL's CPU when nothing
//     is truncated) and takes up to one segment of extra disk space.
//
// If nothing is ready at rotation, the writer falls back to fallocate (ftruncate where the
// file system lacks it). In every case the header is written and fdatasync'ed under a temporary
// name, then the file is renamed into place and the directory fsync'ed, so a segment visible
// under its final name always has a durable header. The first segment of a new log is
// zero-filled by Open itself. A segment that fills up is truncated to its exact length and
// fdatasync'ed before the next one is created: only the last segment ever has bytes after its
// data. Removing segments (or renaming them to spares) also fsyncs the directory, and a spare
// is reused only after that sync: otherwise a crash could bring the name of a removed segment
// back over a file its reuse had already written into.
//
// Every write is one batch followed by an end marker (below) and zeros up to the end of the
// 4 KiB page (or of the segment); the next batch overwrites them. A write thus never ends
// inside a page, so the kernel never has to read a page of a recycled segment from disk to
// merge a write into it.
//
// # Format (all integers little-endian; these constants are part of the format)
//
//	segment  = segment header, batch*, end marker, anything (last segment only)
//
//	segment header (32 bytes)
//	+--------------+--------+---------+------------+--------+----------+
//	| "mpwalseg"   | crc32c | version | firstIndex | salt   | reserved |
//	| 8 bytes      | u32    | u32 = 2 | u64        | u32    | u32 = 0  |
//	+--------------+--------+---------+------------+--------+----------+
//	crc32c covers bytes 12..31 (version, firstIndex, salt, reserved). The salt is random,
//	non-zero and differs from the salt of the file's previous life when it is recycled.
//
//	batch = batch header, records   (one write and one fdatasync each)
//	+--------+-----------+---------+------------+
//	| crc32c | bodyBytes | records | firstIndex |   20 bytes
//	| u32    | u32 > 0   | u32 > 0 | u64        |
//	+--------+-----------+---------+------------+
//	crc32c covers bytes 4..19; bodyBytes is the exact length of the records that follow.
//
//	end marker = a batch header with bodyBytes = 0, records = 0 and firstIndex = the index
//	of the next record; written after every batch (and after the segment header).
//
//	record
//	+--------------+--------+------+-----+---------------+
//	| crc32c ^ salt| length | type | key | payload       |   17 bytes + length
//	| u32          | u32    | u8   | u64 | length bytes  |
//	+--------------+--------+------+-----+---------------+
//	crc32c covers length, type, key and payload (bytes 4..end); it is stored XORed with the
//	segment's salt.
//
// The checksum is CRC-32C (Castagnoli), which detects every error burst up to 32 bits (the
// salt does not weaken that: XOR with a constant moves every error syndrome equally). The
// salt is what keeps a recycled file's previous life out: a batch header cannot pass for
// one of the new life (its firstIndex is older), but when a crash tears a batch, its header
// may land while some of its records did not, and the bytes under them can be whole records
// of the previous life at the same offsets, with checksums that were valid then.
//
// Version 1 (read, never written): no salt (record checksums unmasked, salt bytes zero), no
// end marker; the data ends at an all-zero batch header of the zero fill. A version-1 last
// segment is continued as is, with end markers.
//
// # Recovery rules (Open)
//
// Open reads every segment in order and checks each header, each batch header, each record
// and the index continuity between batches and between segments. The only damage it repairs
// is a torn write at the end of the last segment; everything else is a *CorruptionError
// (naming the file and byte offset, wrapping ErrCorrupt) and Open refuses to start. It never
// drops a record that an Append acknowledged, with the one unavoidable exception below.
//
//   - A segment other than the last must end exactly after its last batch. Any bad header,
//     record, checksum, index gap, trailing byte or short file is corruption.
//   - A segment name that does not parse, a header whose firstIndex differs from the name, or
//     a segment that does not start at the index where the previous one ended (missing or
//     out-of-order segment) is corruption.
//   - In the last segment, scanning stops at the first batch B that is not whole and valid
//     (end marker, zero header, bad checksum, a record running past the end, wrong index,
//     a record checksum that does not match under the segment's salt, ...). The
//     writer issues a write only after the previous batch's fdatasync returned, so at most
//     the final batch can be torn by a crash, and a torn batch can leave any mix of new bytes
//     and old zeros anywhere inside its own extent (pages reach the disk in any order). A
//     batch that was followed by another batch was therefore synced. So: if any offset after
//     B holds a valid batch (header checksum, bodyBytes, records and every record checksum
//     valid under the salt; end markers do not count) whose firstIndex is greater than B's
//     expected index, the damage at B is corruption and Open refuses. Otherwise, if B is an
//     end marker with the expected index, or a zero header with only zeros after it, B is
//     the normal end of the log: nothing is logged or truncated, and whatever follows an end
//     marker (the previous life of a recycled segment) is never read as data. Otherwise B
//     was the final write, never acknowledged, and Open truncates the file at B (logging one
//     line with the file, offset and reason) and preallocates it again.
//   - The exception: damage confined to the final batch of the last segment looks exactly like
//     a torn write (no later batch vouches for it) and is cut, with the log line. No
//     single-file format can tell those apart without another fsync per batch.
//   - Loss of the leading segments cannot be told from TruncateBefore, and loss of the whole
//     last segment cannot be told from a crash before it was created.
//
// *.tmp files are leftovers of an interrupted segment creation or preparation and are removed
// on Open. *.spare files are adopted as spares, the newest RecycledSegmentsMax of them; the
// rest are removed.
//
// # Hard state
//
// SaveHardState writes a small value (at most HardStateBytesMax bytes) into one of two 4 KiB
// slots of the hardstate file, alternating, each slot [crc32c u32 | sequence u64 | length u32
// | value], then fdatasyncs. Recovery takes the valid slot with the highest sequence; a torn
// write can only damage the slot being written, so the other still holds the previous value.
// Two invalid slots are corruption, except an untouched slot beside a torn first save.
//
// # Truncation
//
// TruncateBefore(key) removes the longest prefix of segments, never the active one, whose
// records all have Key < key. Only a prefix: keys need not grow monotonically, and removing a
// middle segment could bring back a record that a removed newer one superseded, as well as
// hide a missing segment from the continuity check. The newest removed segments are renamed
// to spares while fewer than Options.RecycledSegmentsMax exist; the others are deleted.
//
// # Fault hook
//
// StallFS (stall.go) wraps an FS for tests of real processes: while the file at its control
// path exists, every File.Sync and SyncDir waits (polling every few milliseconds) before it
// starts, as on a disk that stopped completing writes. Writes still reach the page cache and
// reads still work; everything that waits for durability — Append, AppendAsync, SaveHardState,
// segment rotation, and Open's own recovery — waits with it, and goes on once the file is
// removed. It changes nothing on disk, so recovery is unaffected. Nothing installs it by
// default: mpaxos serve wraps its WAL in it only when started with --fault-disk-stall-file
// PATH, and a control path that cannot be examined counts as absent, so the hook fails open.
package wal
