package store

import (
	"errors"
	"fmt"
	"github.com/dgraph-io/badger/v4"
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

// garbledOpenStore fills a store with n keys and records in one table, opens it, and
// garbles a third of the way into that table under the open store.
func garbledOpenStore(t *testing.T, n int) (*Store, string) {
	t.Helper()
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
	return s, sst
}

// A read of a key in a block that went bad under an open store is an error, not a key
// that is not there, and the table is listed at once, before any scrub (Badger patched:
// third_party/badger/MOONGATE.md).
func TestBadBlockReadIsAnError(t *testing.T) {
	const n = 3000
	s, sst := garbledOpenStore(t, n)
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

// TestBadBlockFailsScansAndCompactions: keys after a damaged block are not silently
// missing from a scan, and a compaction over the table fails instead of rewriting it
// without them (which would make the loss permanent).
func TestBadBlockFailsScansAndCompactions(t *testing.T) {
	const n = 3000
	s, sst := garbledOpenStore(t, n)

	kvs, err := s.KVList("fn", "k", 0, 0, 0)
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("KVList over a damaged block: %d of %d keys, err %v; want ErrDamaged", len(kvs), n, err)
	}
	recs, err := s.Read("s", 0, 0, 0)
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("outbox Read over a damaged block: %d of %d records, err %v; want ErrDamaged", len(recs), n, err)
	}

	// The store, knowing of the damage, takes no writes (TestDamagedTableRefusesWrites).
	if err := s.Commit(t.Context(), Commit{Namespace: "fn", KV: []KVOp{{Kind: OpSet, Key: "k000001", Value: []byte("1")}}}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("a commit on a store with a damaged table: %v; want ErrDamaged", err)
	}
	// Overlapping keys in a new L0 table, written past the store, then a merge of every level.
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("kfn\x00k000001"), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	// As reclaim does: DropPrefix of a prefix that has a key flushes the memtable.
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte{tagNone}, nil) }); err != nil {
		t.Fatal(err)
	}
	if err := s.db.DropPrefix([]byte{tagNone}); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Flatten(1); err == nil {
		t.Fatal("a compaction over a damaged block succeeded")
	}
	if _, err := os.Stat(sst); err != nil {
		t.Fatalf("the damaged table is gone after a failed compaction: %v", err)
	}
}
