// go-fuse v2.12.1 does not build for 32-bit ARM (its splice code); the tests that need
// this package run on the 64-bit machines of CI.

//go:build linux && (amd64 || arm64)

// Package powercut is a FUSE filesystem for tests that simulates a power cut.
//
// It passes every operation through to a backing directory at once, so reads see what
// was written, but it remembers what has not been made durable: per file, the content
// and size it had at its last fsync (or fdatasync, or msync, which reaches FUSE as an
// fsync after the dirty pages were written back), and per directory, the entries
// created, renamed and removed since its last fsync. Cut unmounts and undoes all of
// that, so the backing directory holds exactly what a disk whose write cache honours
// flushes would hold after the power went, then mounts again.
//
// The model is strict POSIX, as LazyFS's: an fsync of a file makes its data and size
// durable, not its name; only an fsync of the directory makes a create, rename or
// unlink in it durable (a rename between two directories needs both). Other metadata
// (mode, times, owner) is not tracked. Hard links, O_TMPFILE and copy_file_range are
// refused, so that nothing reaches the backing directory unrecorded.
//
// Writes through a shared memory mapping reach the filesystem when the kernel writes
// the dirty pages back, which msync forces before it sends the fsync. The kernel is
// not asked for its writeback cache or for passthrough, so every write() and every
// written-back page arrives here before the call that made it durable.
//
// The process that serves the mount must not map files on it (Badger does): a page
// fault on the mount blocks a thread the Go runtime cannot stop, and a garbage
// collection then waits for ever for the goroutines that would serve the fault. Run
// the program under test as a child process, and read what it left through a copy.
package powercut

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options configure a mount. The zero value drops all unsynced state at a cut and
// tears nothing.
type Options struct {
	// Tear makes Cut keep, in each file, the first sectors (512 bytes each, at least
	// one, not all) of the last page written since the file's last fsync, when that
	// page lies within the durable size: a write the disk had half done when the
	// power went. Rand chooses how many; it is required with Tear.
	Tear bool
	Rand *rand.Rand
}

// FS is a mounted power-cut filesystem. Its methods are safe for concurrent use.
type FS struct {
	backing, trash, mnt string
	opts                Options

	mu     sync.Mutex
	server *fuse.Server
	files  map[uint64]*fileUndo // by backing inode: files written since their last fsync
	ops    []*nsOp              // directory changes not yet durable, oldest first
	trashN int
	// stalled, while not nil, holds every fsync until Resume closes it.
	stalled chan struct{}
}

// Stall makes every fsync wait, from now until Resume: a storage device that stopped
// answering (an SD card whose controller hangs). Writes still land in the page cache.
func (f *FS) Stall() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stalled == nil {
		f.stalled = make(chan struct{})
	}
}

// Resume lets the fsyncs held by Stall go on.
func (f *FS) Resume() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stalled != nil {
		close(f.stalled)
		f.stalled = nil
	}
}

// awaitResume holds an fsync while the device is stalled; the kernel cancels ctx when
// the process waiting for the fsync is killed.
func (f *FS) awaitResume(ctx context.Context) syscall.Errno {
	f.mu.Lock()
	stalled := f.stalled
	f.mu.Unlock()
	if stalled == nil {
		return 0
	}
	select {
	case <-stalled:
		return 0
	case <-ctx.Done():
		return syscall.EINTR
	}
}

// Mount serves backing at mnt. Both directories must exist; backing's parent gets a
// hidden sibling directory where unlinked files wait until their unlink is durable.
func Mount(backing, mnt string, opts Options) (*FS, error) {
	if opts.Tear && opts.Rand == nil {
		return nil, errors.New("powercut: Tear needs Rand")
	}
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("powercut: %w", err)
	}
	f := &FS{backing: backing, trash: backing + ".powercut-trash", mnt: mnt, opts: opts, files: map[uint64]*fileUndo{}}
	// Same filesystem as backing, so that unlink can be a rename.
	if err := os.RemoveAll(f.trash); err != nil {
		return nil, fmt.Errorf("powercut: %w", err)
	}
	if err := os.Mkdir(f.trash, 0o700); err != nil {
		return nil, fmt.Errorf("powercut: %w", err)
	}
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FS) mount() error {
	root, err := f.newRoot()
	if err != nil {
		return err
	}
	// No timeouts: nothing changes the backing directory behind the kernel's back while
	// mounted, but the kernel need not keep what a remount would not.
	zero := time.Duration(0)
	srv, err := fs.Mount(f.mnt, root, &fs.Options{
		EntryTimeout: &zero,
		AttrTimeout:  &zero,
		MountOptions: fuse.MountOptions{
			FsName:        f.backing,
			Name:          "powercut",
			DirectMount:   true, // mount(2) as root, no fusermount needed
			DisableXAttrs: true,
		},
	})
	if err != nil {
		return fmt.Errorf("powercut: mount %s on %s: %w", f.backing, f.mnt, err)
	}
	f.mu.Lock()
	f.server = srv
	f.mu.Unlock()
	return nil
}

// unmount ends the mount; the kernel writes back every dirty page first, which
// arrives as unsynced writes.
func (f *FS) unmount() error {
	f.mu.Lock()
	srv := f.server
	f.server = nil
	f.mu.Unlock()
	if srv == nil {
		return nil
	}
	if err := srv.Unmount(); err != nil {
		return fmt.Errorf("powercut: unmount %s (a process still has a file open?): %w", f.mnt, err)
	}
	srv.Wait()
	return nil
}

// Cut simulates a power cut: it unmounts (every process using the mount must be gone),
// drops everything not made durable, and mounts again.
func (f *FS) Cut() error {
	f.Resume() // a held fsync would hold the unmount
	if err := f.unmount(); err != nil {
		return err
	}
	if err := f.drop(); err != nil {
		return err
	}
	return f.mount()
}

// Close unmounts, as a clean shutdown: what was written stays.
func (f *FS) Close() error {
	f.Resume()
	err := f.unmount()
	f.mu.Lock()
	defer f.mu.Unlock()
	for ino, u := range f.files {
		u.f.Close()
		delete(f.files, ino)
	}
	f.ops = nil
	return errors.Join(err, os.RemoveAll(f.trash))
}

// Pending reports the files with unsynced data and the directory changes not yet
// durable, for tests of the tests.
func (f *FS) Pending() (files, dirOps int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.files), len(f.ops)
}

// drop undoes, while unmounted, every change not made durable: file contents first
// (through descriptors, wherever the files are now named), then directory changes,
// newest first.
func (f *FS) drop() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for ino, u := range f.files {
		errs = append(errs, u.restore(f.opts))
		u.f.Close()
		delete(f.files, ino)
	}
	for i := len(f.ops) - 1; i >= 0; i-- {
		errs = append(errs, f.ops[i].undo())
	}
	f.ops = nil
	entries, err := os.ReadDir(f.trash)
	errs = append(errs, err)
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(f.trash, e.Name())))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("powercut: cut: %w", err)
	}
	return nil
}
