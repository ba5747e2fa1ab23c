//go:build unix

package main

import (
	"fmt"
	"os"
	"syscall"
)

// journalStream is the "device:inode" of a file, as JOURNAL_STREAM writes them.
func journalStream(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
