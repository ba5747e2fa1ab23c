//go:build linux && (amd64 || arm64)

package powercut

import (
	"context"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is the loopback node with every change that reaches the backing directory
// recorded first.
type node struct {
	fs.LoopbackNode
	pc *FS
}

func (f *FS) newRoot() (fs.InodeEmbedder, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(f.backing, &st); err != nil {
		return nil, err
	}
	root := &fs.LoopbackRoot{Path: f.backing, Dev: st.Dev}
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: r}, pc: f}
	}
	root.RootNode = root.NewNode(root, nil, "", &st)
	return root.RootNode, nil
}

// rel is the node's path under the root, "." for the root.
func (n *node) rel() string { return filepath.Clean(n.Path(nil)) }

func (n *node) abs(name string) string {
	return filepath.Join(n.pc.backing, n.rel(), name)
}

// created records that name is new in n.
func (n *node) created(name string, undo func(string) error) {
	p := n.abs(name)
	n.pc.record(&nsOp{dirs: map[string]bool{n.rel(): true}, undo: func() error { return ignoreMissing(undo(p)) }})
}

// made returns what records a loopback create of name when it succeeded.
func (n *node) made(name string, undo func(string) error) func(*fs.Inode, syscall.Errno) (*fs.Inode, syscall.Errno) {
	return func(ch *fs.Inode, errno syscall.Errno) (*fs.Inode, syscall.Errno) {
		if errno == 0 {
			n.created(name, undo)
		}
		return ch, errno
	}
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	n.pc.mu.Lock()
	defer n.pc.mu.Unlock()
	p := n.abs(name)
	_, err := os.Lstat(p)
	existed := err == nil
	if existed && flags&syscall.O_TRUNC != 0 {
		if errno := n.pc.saveAll(p); errno != 0 {
			return nil, nil, 0, errno
		}
	}
	// The loopback's create makes the inode as its lookups do; its handle is replaced
	// by one whose descriptor this filesystem can see.
	child, lfh, _, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	lfh.(fs.FileReleaser).Release(ctx)
	if !existed {
		n.created(name, os.Remove)
	}
	osf, err := os.OpenFile(p, int(flags&^(syscall.O_APPEND|syscall.O_CREAT|syscall.O_EXCL|syscall.O_TRUNC)), 0)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	return child, &file{lf: fs.NewLoopbackFileFromOS(osf), osf: osf, pc: n.pc}, 0, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.pc.mu.Lock()
	defer n.pc.mu.Unlock()
	return n.made(name, os.RemoveAll)(n.LoopbackNode.Mkdir(ctx, name, mode, out))
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.pc.mu.Lock()
	defer n.pc.mu.Unlock()
	return n.made(name, os.Remove)(n.LoopbackNode.Mknod(ctx, name, mode, rdev, out))
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.pc.mu.Lock()
	defer n.pc.mu.Unlock()
	return n.made(name, os.Remove)(n.LoopbackNode.Symlink(ctx, target, name, out))
}

// Link is refused: a second name would share an undo record the model does not keep.
func (n *node) Link(context.Context, fs.InodeEmbedder, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Tmpfile is refused (O_TMPFILE then falls back to a named file).
func (n *node) Tmpfile(context.Context, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// CopyFileRange is refused; the kernel and Go then copy through read and write.
func (n *node) CopyFileRange(context.Context, fs.FileHandle, uint64, *fs.Inode, fs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.EOPNOTSUPP
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	n.pc.mu.Lock()
	defer n.pc.mu.Unlock()
	p := n.abs(name)
	st, err := os.Lstat(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	if st.IsDir() {
		return syscall.EISDIR
	}
	undo, durable, err := n.pc.toTrash(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	n.pc.record(&nsOp{dirs: map[string]bool{n.rel(): true}, undo: func() error { return ignoreMissing(undo()) }, durable: durable})
	return 0
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	n.pc.mu.Lock()
	defer n.pc.mu.Unlock()
	p := n.abs(name)
	st, err := os.Lstat(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := syscall.Rmdir(p); err != nil {
		return fs.ToErrno(err)
	}
	n.pc.record(&nsOp{dirs: map[string]bool{n.rel(): true}, undo: func() error { return os.Mkdir(p, st.Mode().Perm()) }})
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&^unix.RENAME_NOREPLACE != 0 {
		return syscall.EINVAL // exchange and whiteout are not modelled
	}
	n.pc.mu.Lock()
	defer n.pc.mu.Unlock()
	p1, p2 := n.abs(name), np.abs(newName)
	src, err := os.Lstat(p1)
	if err != nil {
		return fs.ToErrno(err)
	}
	op := &nsOp{dirs: map[string]bool{n.rel(): true, np.rel(): true}}
	var undoDst func() error
	if dst, err := os.Lstat(p2); err == nil {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		if os.SameFile(src, dst) {
			return 0
		}
		if errno := renameCompatible(src, dst, p2); errno != 0 {
			return errno
		}
		if undoDst, op.durable, err = n.pc.toTrash(p2); err != nil {
			return fs.ToErrno(err)
		}
	}
	if err := os.Rename(p1, p2); err != nil {
		if undoDst != nil {
			undoDst()
		}
		return fs.ToErrno(err)
	}
	op.undo = func() error {
		err := ignoreMissing(os.Rename(p2, p1))
		if undoDst != nil && err == nil {
			err = undoDst()
		}
		return err
	}
	n.pc.record(op)
	return 0
}

// renameCompatible is rename(2)'s check of a target that exists, made before the
// target is moved aside.
func renameCompatible(src, dst os.FileInfo, dstPath string) syscall.Errno {
	switch {
	case src.IsDir() && !dst.IsDir():
		return syscall.ENOTDIR
	case !src.IsDir() && dst.IsDir():
		return syscall.EISDIR
	case dst.IsDir():
		entries, err := os.ReadDir(dstPath)
		if err != nil {
			return fs.ToErrno(err)
		}
		if len(entries) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	return 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	n.pc.mu.Lock()
	defer n.pc.mu.Unlock()
	p := n.abs("")
	if flags&syscall.O_TRUNC != 0 {
		if errno := n.pc.saveAll(p); errno != 0 {
			return nil, 0, errno
		}
	}
	osf, err := os.OpenFile(p, int(flags&^(syscall.O_APPEND|fuse.FMODE_EXEC)), 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	return &file{lf: fs.NewLoopbackFileFromOS(osf), osf: osf, pc: n.pc}, 0, 0
}

// saveAll keeps the durable content of the whole file at path before a truncation.
// f.mu must be held.
func (f *FS) saveAll(path string) syscall.Errno {
	u, err := f.undoForPath(path)
	if err != nil {
		return fs.ToErrno(err)
	}
	return fs.ToErrno(u.save(0, u.size))
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		n.pc.mu.Lock()
		defer n.pc.mu.Unlock()
		u, err := n.undo(fh)
		if err != nil {
			return fs.ToErrno(err)
		}
		// The page the new end falls in loses its tail too.
		if err := u.save(int64(size), u.size); err != nil {
			return fs.ToErrno(err)
		}
	}
	return n.LoopbackNode.Setattr(ctx, fh, in, out)
}

// undo returns the node's undo record, through its handle when there is one.
// f.mu must be held.
func (n *node) undo(fh fs.FileHandle) (*fileUndo, error) {
	if f, ok := fh.(*file); ok {
		return n.pc.undoFor(f.osf)
	}
	return n.pc.undoForPath(n.abs(""))
}

func (n *node) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	f, ok := fh.(*file)
	if !ok {
		return syscall.EBADF
	}
	n.pc.mu.Lock()
	defer n.pc.mu.Unlock()
	u, err := n.pc.undoFor(f.osf)
	if err != nil {
		return fs.ToErrno(err)
	}
	to := int64(off + size)
	if mode&(unix.FALLOC_FL_COLLAPSE_RANGE|unix.FALLOC_FL_INSERT_RANGE) != 0 {
		to = u.size // what follows moves
	}
	if err := u.save(int64(off), to); err != nil {
		return fs.ToErrno(err)
	}
	return f.lf.Allocate(ctx, off, size, mode)
}

// Fsync makes the file's data and size durable (fsync and fdatasync alike: the size is
// what fdatasync needs to read the data back); for a directory, its entries.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if errno := n.pc.awaitResume(ctx); errno != 0 {
		return errno
	}
	n.pc.mu.Lock()
	defer n.pc.mu.Unlock()
	if n.IsDir() {
		return fs.ToErrno(n.pc.dirSynced(n.rel()))
	}
	if f, ok := fh.(*file); ok {
		return fs.ToErrno(n.pc.synced(f.osf))
	}
	osf, err := os.Open(n.abs(""))
	if err != nil {
		return fs.ToErrno(err)
	}
	defer osf.Close()
	return fs.ToErrno(n.pc.synced(osf))
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &dir{fh: fh, n: n}, fuseFlags, 0
}

// file is an open file. It has only the methods it forwards, so that go-fuse offers the
// kernel no passthrough (which would take writes past this filesystem).
type file struct {
	lf  *fs.LoopbackFile
	osf *os.File // the descriptor lf wraps
	pc  *FS
}

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.lf.Read(ctx, buf, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f.pc.mu.Lock()
	defer f.pc.mu.Unlock()
	u, err := f.pc.undoFor(f.osf)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	if err := u.save(off, off+int64(len(data))); err != nil {
		return 0, fs.ToErrno(err)
	}
	n, errno := f.lf.Write(ctx, data, off)
	u.wrote(off, int64(n))
	return n, errno
}

func (f *file) Flush(ctx context.Context) syscall.Errno   { return f.lf.Flush(ctx) }
func (f *file) Release(ctx context.Context) syscall.Errno { return f.lf.Release(ctx) }
func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}
func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Setattr(ctx, in, out)
}
func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}

// dir is an open directory whose fsync is recorded.
type dir struct {
	fh fs.FileHandle
	n  *node
}

func (d *dir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.fh.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *dir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.fh.(fs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *dir) Releasedir(ctx context.Context, flags uint32) {
	d.fh.(fs.FileReleasedirer).Releasedir(ctx, flags)
}

func (d *dir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.n.Fsync(ctx, nil, flags)
}

var (
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeAllocater      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.FileWriter         = (*file)(nil)
	_ fs.FileSetattrer      = (*file)(nil)
	_ fs.FileFsyncdirer     = (*dir)(nil)
	_ fs.FileReaddirenter   = (*dir)(nil)
	_ fs.FileSeekdirer      = (*dir)(nil)
	_ fs.FileReleasedirer   = (*dir)(nil)
)
