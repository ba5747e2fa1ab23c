package store

import (
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
