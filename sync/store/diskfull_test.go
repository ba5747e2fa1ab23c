package store

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestDiskFull fills a small tmpfs under the store: commits fail with
// ErrNoSpace and write nothing, reads and acks go on, and commits succeed again
// once space returns.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs: run as root to test the full-disk path")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s): the full-disk path is not tested", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	const reserve = 8 << 20
	s, err := Open(Options{Dir: filepath.Join(mnt, "db"), MinFreeBytes: reserve})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.RegisterConsumer("sink", []string{"*"})
	ctx := context.Background()
	commit := func() error {
		return s.Commit(ctx, Commit{Namespace: "f",
			KV:      []KVOp{{Kind: OpIncr, Key: "n", Delta: 1}},
			Records: []Append{{Stream: "s", Data: []byte(`{"v":1}`)}}})
	}
	for range 10 {
		if err := commit(); err != nil {
			t.Fatal(err)
		}
	}

	// Fill the file system to the last byte.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break // ENOSPC
		}
	}
	f.Close()
	if free, _ := freeBytes(mnt); free >= reserve {
		t.Fatalf("filler left %d bytes free", free)
	}

	err = commit()
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("commit on a full disk: %v, want ErrNoSpace", err)
	}
	t.Logf("commit on a full disk: %v", err)
	if _, err := s.Append(ctx, Append{Stream: "s", Data: []byte(`1`)}); !errors.Is(err, ErrNoSpace) {
		t.Errorf("append on a full disk: %v, want ErrNoSpace", err)
	}
	if got := getKV(t, s, "f", "n"); got != "10" {
		t.Errorf("counter on a full disk: %s, want 10 (read failed, or the refused commit wrote)", got)
	}
	if recs, err := s.Read("s", 0, 0, 0); err != nil || len(recs) != 10 {
		t.Errorf("read on a full disk: %d records, %v", len(recs), err)
	}
	if st := s.Stats(); st.DiskFree >= reserve {
		t.Errorf("stats report %d bytes free", st.DiskFree)
	}

	os.Remove(filler)
	for i := range 10 {
		if err := commit(); err != nil {
			t.Fatalf("commit %d after space returned: %v", i, err)
		}
	}
	if got := getKV(t, s, "f", "n"); got != "20" {
		t.Errorf("counter after recovery: %s, want 20", got)
	}
	if err := s.Ack("sink", "s", 20); err != nil {
		t.Fatal(err)
	}
	s2 := reopen(t, s)
	if got := getKV(t, s2, "f", "n"); got != "20" {
		t.Errorf("counter after reopen: %s, want 20", got)
	}
}
