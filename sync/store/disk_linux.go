package store

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// freeBytes returns the space available to unprivileged writers on the file
// system holding dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// diskUsage returns the bytes allocated to the files in dir. Badger's log files
// are sparse until written, so their apparent size would overstate the use.
func diskUsage(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ents {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, e.Name()), &st); err != nil {
			continue // deleted meanwhile by a compaction or GC
		}
		n += int64(st.Blocks) * 512
	}
	return n, nil
}

// lockDir takes Badger's directory lock (the flock Badger takes on the directory) while
// the store reads files before opening Badger, so that a gateway running on dir cannot
// compact them away under the check. unlock releases it.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another process has the store open (lock on %s): %w", dir, err)
	}
	return func() { f.Close() }, nil
}
