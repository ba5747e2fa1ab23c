package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// After the outbox drains, trimming, compaction and value-log GC give the
// disk space back.
func TestDiskUseFallsAfterDrain(t *testing.T) {
	s := openTest(t, Options{})
	s.RegisterConsumer("sink", []string{"*"})
	ctx := context.Background()
	big := fmt.Appendf(nil, `"%02000d"`, 0) // > valueThreshold: in the value log
	small := []byte(`{"t":21.5}`)
	var last uint64
	for range 400 {
		var recs []Append
		for range 50 {
			recs = append(recs, Append{Stream: "big", Data: big}, Append{Stream: "small", Data: small})
		}
		out, err := s.Append(ctx, recs...)
		if err != nil {
			t.Fatal(err)
		}
		last = out[len(out)-1].Seq
	}
	s.maintainSync()
	full := s.Stats()
	t.Logf("full: %d records, %d KiB pending, disk %d KiB", full.PendingRecords, full.PendingBytes>>10, full.DiskBytes>>10)
	for _, stream := range []string{"big", "small"} {
		if err := s.Ack("sink", stream, last); err != nil {
			t.Fatal(err)
		}
	}
	s.maintainSync() // trims the rest, then GC
	st := s.Stats()
	t.Logf("drained: %d records, disk %d KiB", st.PendingRecords, st.DiskBytes>>10)
	if st.PendingRecords != 0 {
		t.Fatalf("%d records pending after the drain", st.PendingRecords)
	}
	if st.DiskBytes > full.DiskBytes/4 {
		t.Errorf("disk use %d KiB after the drain, was %d KiB: not given back", st.DiskBytes>>10, full.DiskBytes>>10)
		listDir(t, s.opts.Dir)
	}
}

// listDir logs the files of dir with the space they take.
func listDir(t *testing.T, dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		var st syscall.Stat_t
		syscall.Stat(filepath.Join(dir, e.Name()), &st)
		t.Logf("%s %d KiB (apparent %d KiB)", e.Name(), st.Blocks/2, st.Size>>10)
	}
}
