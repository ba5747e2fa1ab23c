package store

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// A table that goes bad under an open store is found by the scrub, logged and listed,
// where Badger alone takes the keys of its bad blocks for missing.
func TestScrubFindsDamageUnderARunningStore(t *testing.T) {
	dir := t.TempDir()
	s := fillDamageStore(t, dir, 3000, "big")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Options{Dir: dir, Scrub: -1})
	s.scrub()
	if d := s.Stats().DamagedTables; len(d) != 0 {
		t.Fatalf("damaged tables %v in an undamaged store", d)
	}
	sst := onlyFile(t, dir, "*.sst")
	fi, err := os.Stat(sst)
	if err != nil {
		t.Fatal(err)
	}
	garble(t, sst, fi.Size()/3)
	s.scrub()
	s.scrub() // listed once
	if d := s.Stats().DamagedTables; len(d) != 1 || d[0] != filepath.Base(sst) {
		t.Fatalf("damaged tables %v; want [%s]", d, filepath.Base(sst))
	}
}

// A read of a key in a block that went bad under an open store is an error, not a key
// that is not there, and the table is listed at once, before any scrub (Badger patched:
// third_party/badger/MOONGATE.md).
func TestBadBlockReadIsAnError(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	s := fillDamageStore(t, dir, n, "big")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Options{Dir: dir, Scrub: -1})
	sst := onlyFile(t, dir, "*.sst")
	fi, err := os.Stat(sst)
	if err != nil {
		t.Fatal(err)
	}
	garble(t, sst, fi.Size()/3)
	failed := 0
	for i := range n {
		key := fmt.Sprintf("k%06d", i)
		_, ok, err := s.KVGet("fn", key)
		switch {
		case err != nil:
			failed++
		case !ok:
			t.Fatalf("%s read as missing from a damaged block", key)
		}
	}
	if failed == 0 {
		t.Fatal("no read failed: the garbage missed every block")
	}
	if d := s.Stats().DamagedTables; len(d) != 1 || d[0] != filepath.Base(sst) {
		t.Fatalf("damaged tables %v before any scrub; want [%s]", d, filepath.Base(sst))
	}
	t.Logf("%d of %d reads failed", failed, n)
}
