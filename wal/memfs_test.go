package wal

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"sync"
)

// memFS is an in-memory FS that models what a crash keeps: file contents only up to the last
// Sync (writes since then are kept, dropped, torn at a byte or kept sector by sector, at
// random), and directory entries only up to the last SyncDir. After Crash the old instance
// fails every call, so a WAL still running on it cannot acknowledge anything more.
type memFS struct {
	mu      sync.Mutex
	files   map[string]*memNode // names now
	durable map[string]*memNode // names as of the last SyncDir
	dead    bool
	syncs   int
	// failSync, when set, is called on every file Sync with the file's current name (""
	// if removed); an error it returns fails that Sync (the data stays unsynced). It may
	// block to hold the writer inside fdatasync.
	failSync func(name string, syncs int) error
}

type memNode struct {
	data    []byte
	synced  []byte
	pending []memOperation
}

// memOperation is a write (data != nil) or a size change, not yet synced.
type memOperation struct {
	offset int64
	data   []byte
	size   int64
}

var errDeadFS = errors.New("memfs: crashed")

func newMemFS() *memFS {
	return &memFS{files: map[string]*memNode{}, durable: map[string]*memNode{}}
}

func (fs *memFS) check() error {
	if fs.dead {
		return errDeadFS
	}
	return nil
}

func (fs *memFS) OpenFile(name string, flag int, _ os.FileMode) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return nil, err
	}
	node, ok := fs.files[name]
	if !ok {
		if flag&os.O_CREATE == 0 {
			return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
		}
		node = &memNode{}
		fs.files[name] = node
	}
	if flag&os.O_TRUNC != 0 {
		node.apply(memOperation{size: 0})
	}
	return &memFile{fs: fs, node: node, name: name}, nil
}

func (fs *memFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return err
	}
	if _, ok := fs.files[name]; !ok {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(fs.files, name)
	return nil
}

func (fs *memFS) Rename(oldName, newName string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return err
	}
	node, ok := fs.files[oldName]
	if !ok {
		return &os.PathError{Op: "rename", Path: oldName, Err: os.ErrNotExist}
	}
	delete(fs.files, oldName)
	fs.files[newName] = node
	return nil
}

func (fs *memFS) ReadDir(dir string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return nil, err
	}
	var names []string
	for name := range fs.files {
		if path.Dir(name) == path.Clean(dir) {
			names = append(names, path.Base(name))
		}
	}
	slices.Sort(names)
	return names, nil
}

func (fs *memFS) MkdirAll(string, os.FileMode) error { return nil }

func (fs *memFS) SyncDir(string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return err
	}
	fs.durable = maps(fs.files)
	return nil
}

func (fs *memFS) Lock(string) (io.Closer, error) { return io.NopCloser(nil), nil }

func maps(m map[string]*memNode) map[string]*memNode {
	c := make(map[string]*memNode, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Crash returns the file system as a machine restarting now would find it, and kills fs.
func (fs *memFS) Crash(rng *rand.Rand) *memFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.dead = true
	after := newMemFS()
	for name, node := range fs.durable {
		data := slices.Clone(node.synced)
		for _, op := range node.pending {
			data = applyPartially(data, op, rng)
		}
		after.files[name] = &memNode{data: data, synced: slices.Clone(data)}
	}
	after.durable = maps(after.files)
	return after
}

// Clone copies the current state (everything, synced or not) into a live file system.
func (fs *memFS) Clone() *memFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c := newMemFS()
	for name, node := range fs.files {
		c.files[name] = &memNode{data: slices.Clone(node.data), synced: slices.Clone(node.data)}
	}
	c.durable = maps(c.files)
	return c
}

// Bytes returns a copy of a file's current contents.
func (fs *memFS) Bytes(name string) []byte {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if node, ok := fs.files[name]; ok {
		return slices.Clone(node.data)
	}
	return nil
}

// SetBytes replaces a file's contents, durably.
func (fs *memFS) SetBytes(name string, data []byte) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.files[name] = &memNode{data: slices.Clone(data), synced: slices.Clone(data)}
	fs.durable = maps(fs.files)
}

func applyFully(data []byte, op memOperation) []byte {
	if op.data == nil {
		if op.size <= int64(len(data)) {
			return data[:op.size]
		}
		return append(data, make([]byte, op.size-int64(len(data)))...)
	}
	if end := op.offset + int64(len(op.data)); end > int64(len(data)) {
		data = append(data, make([]byte, end-int64(len(data)))...)
	}
	copy(data[op.offset:], op.data)
	return data
}

// applyPartially applies an unsynced operation the way a crash might: fully, not at all,
// torn after a random byte, or as a random subset of its 512-byte sectors.
func applyPartially(data []byte, op memOperation, rng *rand.Rand) []byte {
	switch mode := rng.IntN(4); {
	case mode == 0 || op.data == nil && mode >= 2:
		return applyFully(data, op)
	case mode == 1:
		return data
	case mode == 2:
		cut := rng.IntN(len(op.data) + 1)
		return applyFully(data, memOperation{offset: op.offset, data: op.data[:cut]})
	default:
		for start := 0; start < len(op.data); start += 512 {
			if rng.IntN(2) == 0 {
				end := min(start+512, len(op.data))
				data = applyFully(data, memOperation{offset: op.offset + int64(start),
					data: op.data[start:end]})
			}
		}
		return data
	}
}

func (n *memNode) apply(op memOperation) {
	n.data = applyFully(n.data, op)
	n.pending = append(n.pending, op)
}

type memFile struct {
	fs   *memFS
	node *memNode
	name string
}

func (f *memFile) ReadAt(b []byte, offset int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return 0, err
	}
	if offset >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(b, f.node.data[offset:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(b []byte, offset int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return 0, err
	}
	f.node.apply(memOperation{offset: offset, data: slices.Clone(b)})
	return len(b), nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return 0, err
	}
	return int64(len(f.node.data)), nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return err
	}
	f.node.apply(memOperation{size: size})
	return nil
}

func (f *memFile) Preallocate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return err
	}
	if size > int64(len(f.node.data)) {
		f.node.apply(memOperation{size: size})
	}
	return nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	f.fs.syncs++
	syncs, hook := f.fs.syncs, f.fs.failSync
	name := ""
	for candidate, node := range f.fs.files {
		if node == f.node {
			name = candidate
		}
	}
	f.fs.mu.Unlock()
	if hook != nil {
		if err := hook(name, syncs); err != nil {
			return fmt.Errorf("memfs: injected sync failure: %w", err)
		}
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return err
	}
	f.node.synced = slices.Clone(f.node.data)
	f.node.pending = nil
	return nil
}

func (f *memFile) Close() error { return nil }
