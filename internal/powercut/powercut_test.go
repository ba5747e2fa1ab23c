//go:build linux && (amd64 || arm64)

package powercut

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mount serves a new backing directory. A machine that cannot mount FUSE fails the test:
// CI has /dev/fuse, and a skipped power-loss test would pass for the wrong reason.
func mount(t *testing.T, opts Options) (f *FS, mnt string) {
	t.Helper()
	base := t.TempDir()
	backing, mnt := filepath.Join(base, "disk"), filepath.Join(base, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Mount(backing, mnt, opts)
	if err != nil {
		t.Fatalf("mount (needs /dev/fuse and root or fusermount3): %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return f, mnt
}

func write(t *testing.T, path string, data []byte, off int64) *os.File {
	t.Helper()
	fd, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fd.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	return fd
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// durable makes path exist durably with data.
func durable(t *testing.T, path string, data []byte) {
	t.Helper()
	fd := write(t, path, data, 0)
	if err := fd.Sync(); err != nil {
		t.Fatal(err)
	}
	fd.Close()
	syncDir(t, filepath.Dir(path))
}

func cut(t *testing.T, f *FS) {
	t.Helper()
	if err := f.Cut(); err != nil {
		t.Fatal(err)
	}
}

func content(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantContent(t *testing.T, path string, want []byte) {
	t.Helper()
	if got := content(t, path); !bytes.Equal(got, want) {
		t.Errorf("%s after the cut: %d bytes %.40q..., want %d bytes %.40q...", filepath.Base(path), len(got), got, len(want), want)
	}
}

func wantMissing(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the cut: %v, want it gone", filepath.Base(path), err)
	}
}

func TestUnsyncedWriteDropped(t *testing.T) {
	f, mnt := mount(t, Options{})
	p := filepath.Join(mnt, "a")
	durable(t, p, []byte("synced"))
	fd := write(t, p, bytes.Repeat([]byte("x"), 10000), 3) // overwrites and grows
	fd.Close()
	wantContent(t, p, append([]byte("syn"), bytes.Repeat([]byte("x"), 10000)...)) // before the cut, reads see it
	cut(t, f)
	wantContent(t, p, []byte("synced"))
	if files, ops := f.Pending(); files != 0 || ops != 0 {
		t.Errorf("after the cut %d files and %d directory changes pending", files, ops)
	}
}

func TestSyncedWriteKept(t *testing.T) {
	f, mnt := mount(t, Options{})
	p := filepath.Join(mnt, "a")
	durable(t, p, []byte("one"))
	fd := write(t, p, []byte("two, longer"), 0)
	if err := unix.Fdatasync(int(fd.Fd())); err != nil {
		t.Fatal(err)
	}
	fd.WriteAt([]byte("three"), 0) // after the sync: dropped
	fd.Close()
	cut(t, f)
	wantContent(t, p, []byte("two, longer"))
}

func TestCreateWithoutDirSyncUndone(t *testing.T) {
	f, mnt := mount(t, Options{})
	p := filepath.Join(mnt, "new")
	fd := write(t, p, []byte("data"), 0)
	fd.Sync() // the data, not the name
	fd.Close()
	if err := os.MkdirAll(filepath.Join(mnt, "d1", "d2"), 0o755); err != nil {
		t.Fatal(err)
	}
	cut(t, f)
	wantMissing(t, p)
	wantMissing(t, filepath.Join(mnt, "d1"))

	durable(t, p, []byte("data"))
	cut(t, f)
	wantContent(t, p, []byte("data"))
}

// A durable directory's entries survive though its parent's entry for it did not.
func TestMkdirNeedsParentSync(t *testing.T) {
	f, mnt := mount(t, Options{})
	d := filepath.Join(mnt, "store")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	durable(t, filepath.Join(d, "MANIFEST"), []byte("m"))
	cut(t, f)
	wantMissing(t, d)

	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	durable(t, filepath.Join(d, "MANIFEST"), []byte("m"))
	cut(t, f)
	wantContent(t, filepath.Join(d, "MANIFEST"), []byte("m"))
}

func TestRenameWithoutDirSyncUndone(t *testing.T) {
	f, mnt := mount(t, Options{})
	a, b := filepath.Join(mnt, "a"), filepath.Join(mnt, "b")
	durable(t, a, []byte("new"))
	durable(t, b, []byte("old"))
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	wantContent(t, b, []byte("new"))
	wantMissing(t, a)
	cut(t, f)
	wantContent(t, a, []byte("new"))
	wantContent(t, b, []byte("old"))

	// The atomic-write recipe: temp file, sync, rename, sync the directory.
	durable(t, a, []byte("newer"))
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	cut(t, f)
	wantMissing(t, a)
	wantContent(t, b, []byte("newer"))
}

func TestUnlinkWithoutDirSyncUndone(t *testing.T) {
	f, mnt := mount(t, Options{})
	a := filepath.Join(mnt, "a")
	durable(t, a, []byte("keep"))
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, a)
	cut(t, f)
	wantContent(t, a, []byte("keep"))

	os.Remove(a)
	syncDir(t, mnt)
	cut(t, f)
	wantMissing(t, a)
}

// A file written after its unlink keeps, on a cut that undoes the unlink, its synced content.
func TestUnlinkedFileDataUndone(t *testing.T) {
	f, mnt := mount(t, Options{})
	a := filepath.Join(mnt, "a")
	durable(t, a, []byte("keep"))
	fd := write(t, a, []byte("gone"), 0)
	os.Remove(a)
	fd.WriteAt([]byte("more"), 4)
	fd.Close()
	cut(t, f)
	wantContent(t, a, []byte("keep"))
}

func TestTruncateUndone(t *testing.T) {
	f, mnt := mount(t, Options{})
	p := filepath.Join(mnt, "a")
	data := make([]byte, 3*4096+100)
	for i := range data {
		data[i] = byte(i%251 + 1)
	}
	durable(t, p, data)
	if err := os.Truncate(p, 5000); err != nil {
		t.Fatal(err)
	}
	fd := write(t, p, []byte("tail"), 20000)
	fd.Close()
	cut(t, f)
	wantContent(t, p, data)

	// O_TRUNC at open
	fd, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	fd.Close()
	cut(t, f)
	wantContent(t, p, data)
}

func TestFallocateUndone(t *testing.T) {
	f, mnt := mount(t, Options{})
	p := filepath.Join(mnt, "a")
	data := bytes.Repeat([]byte("d"), 3*4096)
	durable(t, p, data)
	fd, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(fd.Fd()), 0, 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(fd.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4096, 4096); err != nil {
		t.Fatal(err)
	}
	fd.Close()
	if st, _ := os.Stat(p); st.Size() != 1<<20 {
		t.Fatalf("size after fallocate %d", st.Size())
	}
	cut(t, f)
	wantContent(t, p, data)
}

// What Badger does: a file sized with ftruncate, written through a shared mapping, made
// durable with msync. The writes reach the filesystem at writeback, before msync's fsync;
// what was written after the msync reaches it at the latest when the cut unmounts, as
// unsynced writes.
func TestMmapMsync(t *testing.T) {
	f, mnt := mount(t, Options{})
	p := filepath.Join(mnt, "wal")
	const size = 1 << 20
	fd, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := fd.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := fd.Sync(); err != nil {
		t.Fatal(err)
	}
	fd.Close()
	syncDir(t, mnt)
	mmapChild(t, p, "100:synced through msync", "sync", "8192:written, never synced", "100:SYNCED")
	// The unmap wrote the dirty pages back (fuse_vma_close): the backing file has them,
	// and they are pending.
	if got := content(t, filepath.Join(f.backing, "wal")); !bytes.HasPrefix(got[8192:], []byte("written, never synced")) {
		t.Errorf("backing file after the unmap has %q at 8192", got[8192:8200])
	}
	if files, _ := f.Pending(); files != 1 {
		t.Errorf("%d files pending after the unmap, want 1", files)
	}
	cut(t, f)
	want := make([]byte, size)
	copy(want[100:], "synced through msync")
	wantContent(t, p, want)
}

const mmapEnv = "POWERCUT_MMAP_FILE"

// mmapChild maps path in a child process, which applies steps: "OFF:TEXT" copies TEXT
// into the mapping at OFF, "sync" is msync(MS_SYNC). Not in this process: a page fault
// on the mount blocks a thread the Go runtime cannot stop, and a garbage collection
// would then wait for ever for the goroutines that serve the fault.
func mmapChild(t *testing.T, path string, steps ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMmapChild$")
	cmd.Env = append(os.Environ(), mmapEnv+"="+path, "POWERCUT_MMAP_STEPS="+strings.Join(steps, "|"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mmap child: %v: %s", err, out)
	}
}

// TestMmapChild is mmapChild's process; it does nothing otherwise.
func TestMmapChild(t *testing.T) {
	path := os.Getenv(mmapEnv)
	if path == "" {
		t.Skip("run by mmapChild")
	}
	fd, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(fd.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range strings.Split(os.Getenv("POWERCUT_MMAP_STEPS"), "|") {
		if step == "sync" {
			if err := unix.Msync(m, unix.MS_SYNC); err != nil {
				t.Fatal(err)
			}
			continue
		}
		off, text, _ := strings.Cut(step, ":")
		n, err := strconv.Atoi(off)
		if err != nil {
			t.Fatalf("step %q: %v", step, err)
		}
		copy(m[n:], text)
	}
	if err := unix.Munmap(m); err != nil {
		t.Fatal(err)
	}
}

func TestTornWrite(t *testing.T) {
	f, mnt := mount(t, Options{Tear: true, Rand: rand.New(rand.NewPCG(1, 2))})
	p := filepath.Join(mnt, "a")
	old := bytes.Repeat([]byte("o"), 2*4096)
	durable(t, p, old)
	fd := write(t, p, bytes.Repeat([]byte("n"), 4096), 4096)
	fd.Close()
	cut(t, f)
	got := content(t, p)
	page := got[4096:]
	k := bytes.IndexByte(page, 'o')
	if !bytes.Equal(got[:4096], old[:4096]) || k <= 0 || k%512 != 0 || k == 4096 ||
		!bytes.Equal(page[:k], bytes.Repeat([]byte("n"), k)) || !bytes.Equal(page[k:], old[4096+k:]) {
		t.Errorf("torn page: want a prefix of whole new sectors, some but not all; got new up to %d", k)
	}
}

// A stalled device holds fsync until Resume, and only fsync: writes go on.
func TestStallHoldsFsyncUntilResume(t *testing.T) {
	f, mnt := mount(t, Options{})
	fd := write(t, filepath.Join(mnt, "f"), []byte("data"), 0)
	defer fd.Close()
	f.Stall()
	synced := make(chan error, 1)
	go func() { synced <- fd.Sync() }()
	if _, err := fd.WriteAt([]byte("more"), 4); err != nil {
		t.Fatalf("write while stalled: %v", err)
	}
	select {
	case err := <-synced:
		t.Fatalf("fsync returned (%v) while the device is stalled", err)
	case <-time.After(200 * time.Millisecond): // a held fsync cannot be observed otherwise
	}
	f.Resume()
	if err := <-synced; err != nil {
		t.Fatalf("fsync after Resume: %v", err)
	}
}
