//go:build linux && (amd64 || arm64)

package powercut

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

const (
	pageSize   = 4096
	sectorSize = 512
)

// fileUndo is what a file held at its last fsync, for the parts changed since: its
// size, and the durable content of every page written, truncated or punched since.
type fileUndo struct {
	f     *os.File // read-write, on the backing inode, wherever it is named
	size  int64
	pages map[int64][]byte // page index → durable content (up to size); nil: zeros
	last  int64            // the page written last, -1 when none
}

// undoFor returns the undo record of the backing file open as fd (of any access mode),
// starting one if the file was clean. f.mu must be held.
func (f *FS) undoFor(fd *os.File) (*fileUndo, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fd.Fd()), &st); err != nil {
		return nil, err
	}
	if u, ok := f.files[st.Ino]; ok {
		return u, nil
	}
	// A descriptor of its own, read-write, that survives the handle and any rename.
	rw, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(fd.Fd())), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen %s: %w", fd.Name(), err)
	}
	u := &fileUndo{f: rw, size: st.Size, pages: map[int64][]byte{}, last: -1}
	f.files[st.Ino] = u
	return u, nil
}

// undoForPath is undoFor for a file named by its backing path.
func (f *FS) undoForPath(path string) (*fileUndo, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	return f.undoFor(fd)
}

// synced forgets the undo record of the file open as fd: all of it is durable now.
func (f *FS) synced(fd *os.File) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fd.Fd()), &st); err != nil {
		return err
	}
	if u, ok := f.files[st.Ino]; ok {
		u.f.Close()
		delete(f.files, st.Ino)
	}
	return nil
}

// save keeps the durable content of the pages in [from, to) before they change.
func (u *fileUndo) save(from, to int64) error {
	to = min(to, u.size)
	buf := make([]byte, pageSize)
	for p := from / pageSize; p*pageSize < to; p++ {
		if _, ok := u.pages[p]; ok {
			continue
		}
		n := min(pageSize, u.size-p*pageSize)
		if _, err := u.f.ReadAt(buf[:n], p*pageSize); err != nil {
			return fmt.Errorf("save page %d of %s: %w", p, u.f.Name(), err)
		}
		if allZero(buf[:n]) {
			u.pages[p] = nil
		} else {
			u.pages[p] = bytes.Clone(buf[:n])
		}
	}
	return nil
}

// wrote notes a write of n bytes at off, after save.
func (u *fileUndo) wrote(off, n int64) {
	if n > 0 {
		u.last = (off + n - 1) / pageSize
	}
}

// restore puts back the durable size and content; with Tear, the last page written
// keeps a prefix of its new sectors.
func (u *fileUndo) restore(opts Options) error {
	if err := u.f.Truncate(u.size); err != nil {
		return fmt.Errorf("restore %s: %w", u.f.Name(), err)
	}
	for p, old := range u.pages {
		n := min(pageSize, u.size-p*pageSize)
		if old == nil {
			old = make([]byte, n)
		}
		skip := 0
		if opts.Tear && p == u.last {
			if sectors := (len(old) + sectorSize - 1) / sectorSize; sectors > 1 {
				skip = (1 + opts.Rand.IntN(sectors-1)) * sectorSize
			}
		}
		if _, err := u.f.WriteAt(old[skip:], p*pageSize+int64(skip)); err != nil {
			return fmt.Errorf("restore page %d of %s: %w", p, u.f.Name(), err)
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// nsOp is one directory change not yet durable.
type nsOp struct {
	dirs    map[string]bool // relative paths of the directories whose fsync it still needs
	undo    func() error
	durable func() error // once every directory was synced; nil if nothing to do
}

// record adds a directory change. f.mu must be held.
func (f *FS) record(op *nsOp) { f.ops = append(f.ops, op) }

// dirSynced makes durable every change that needed only (what remains) the fsync of
// dir. f.mu must be held.
func (f *FS) dirSynced(dir string) error {
	var errs []error
	kept := f.ops[:0]
	for _, op := range f.ops {
		delete(op.dirs, dir)
		if len(op.dirs) > 0 {
			kept = append(kept, op)
			continue
		}
		if op.durable != nil {
			errs = append(errs, op.durable())
		}
	}
	clear(f.ops[len(kept):])
	f.ops = kept
	return errors.Join(errs...)
}

// toTrash moves path out of the way (an unlink, or the target of a rename) so that a
// cut can bring it back; it returns the undo and the final removal.
func (f *FS) toTrash(path string) (undo, durable func() error, err error) {
	f.trashN++
	t := filepath.Join(f.trash, strconv.Itoa(f.trashN))
	if err := os.Rename(path, t); err != nil {
		return nil, nil, err
	}
	return func() error { return os.Rename(t, path) }, func() error { return os.RemoveAll(t) }, nil
}

// ignoreMissing makes an undo tolerate an entry already gone: a later change that was
// made durable (in another directory) removed it.
func ignoreMissing(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
