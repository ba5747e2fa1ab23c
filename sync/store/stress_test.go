package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestStress32bit writes at least 1M keys through many flushes and compactions,
// closes, reopens and reads every key back. It is the proof for the 32-bit ARM
// table-builder bug (see arch_arm.go) and runs only when asked:
//
//	MOONGATE_STRESS=1 GOARCH=arm GOARM=6 go test -exec qemu-arm -run TestStress32bit -v ./sync/store
//
// MOONGATE_STRESS_KEYS sets the number of keys (default 1000000).
// MOONGATE_STRESS_UNSAFE=1 runs with Badger's default LSM sizes and without
// enforceArch, to show the bug the enforced options prevent.
func TestStress32bit(t *testing.T) {
	if os.Getenv("MOONGATE_STRESS") == "" {
		t.Skip("set MOONGATE_STRESS=1 to run (see the comment)")
	}
	n := 1_000_000
	if v := os.Getenv("MOONGATE_STRESS_KEYS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	opts := Options{Dir: t.TempDir(), MinFreeBytes: -1}
	if os.Getenv("MOONGATE_STRESS_UNSAFE") != "" {
		opts.unsafeArch = true
		opts.tune = func(bo *badger.Options) {
			d := badger.DefaultOptions("")
			bo.MemTableSize = d.MemTableSize
			bo.BaseTableSize = d.BaseTableSize
			bo.TableSizeMultiplier = d.TableSizeMultiplier
			bo.NumMemtables = d.NumMemtables
			bo.NumLevelZeroTables = d.NumLevelZeroTables
			bo.NumLevelZeroTablesStall = d.NumLevelZeroTablesStall
			bo.CompactL0OnClose = d.CompactL0OnClose
		}
		t.Log("running with Badger's default LSM sizes and no enforceArch")
	}
	start := time.Now()
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	// One value in 64 is larger than ValueThreshold and goes to the value log.
	value := func(i int) []byte {
		if i%64 == 0 {
			return fmt.Appendf(nil, `{"i":%d,"pad":"%01100d"}`, i, i)
		}
		return fmt.Appendf(nil, `{"i":%d}`, i)
	}
	// Keys go in ascending order, a commit's worth per writer in turn, so
	// flushed tables barely overlap and compactions mostly rewrite rather
	// than merge: every table build that a bigger, scrambled load would do,
	// at a third of the CPU, which matters under qemu. MOONGATE_STRESS_SCRAMBLE=1
	// writes in a scrambled order instead.
	order := func(i int) int { return i }
	if os.Getenv("MOONGATE_STRESS_SCRAMBLE") != "" {
		order = func(i int) int { return int(int64(i) * 7919 % int64(n)) } // int64: overflows a 32-bit int
	}
	key := func(i int) string { return fmt.Sprintf("key%09d", order(i)) }
	const perCommit, writers = 1000, 2
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := w * perCommit; lo < n; lo += writers * perCommit {
				c := Commit{Namespace: "stress"}
				for i := lo; i < min(lo+perCommit, n); i++ {
					c.KV = append(c.KV, KVOp{Kind: OpSet, Key: key(i), Value: value(order(i))})
				}
				if err := s.Commit(context.Background(), c); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wrote := time.Since(start)
	t.Logf("wrote %d keys in %v; LSM:\n%s", n, wrote, s.db.LevelsToString())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var levels int
	for _, l := range s.db.Levels() {
		if l.NumTables > 0 && l.Level > 0 {
			levels++
		}
	}
	if levels < 2 {
		t.Errorf("data on %d levels below L0: not enough compaction to prove anything", levels)
	}
	// Every key and value, in order, by iteration.
	next, bad := 0, 0
	prefix := kvPrefix("stress")
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			want := fmt.Sprintf("key%09d", next)
			got := string(it.Item().Key()[len(prefix):])
			if got == want {
				v, err := it.Item().ValueCopy(nil)
				if err != nil || string(v) != string(value(next)) {
					if bad++; bad <= 5 {
						t.Errorf("%s: value %.40q, err %v", got, v, err)
					}
				}
			} else {
				if bad++; bad <= 5 {
					t.Errorf("iteration: key %q where %q was expected", got, want)
				}
				if got > want {
					fmt.Sscanf(got, "key%09d", &next) // skip over the missing ones
				}
			}
			next++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != n {
		t.Errorf("iterated up to key %d, want %d", next, n)
	}
	// Point reads go through the bloom filters and block indexes instead: one
	// key in 16 of them.
	missing := 0
	for i := 0; i < n; i += 16 {
		v, ok, err := s.KVGet("stress", fmt.Sprintf("key%09d", i))
		if err != nil || !ok || string(v) != string(value(i)) {
			if missing++; missing <= 5 {
				t.Errorf("get key%09d: ok=%v err=%v value %.40q", i, ok, err, v)
			}
		}
	}
	if missing > 0 || bad > 0 {
		t.Errorf("after reopen: %d bad entries in the iteration, %d failed gets", bad, missing)
	}
	t.Logf("total %v (write %v)", time.Since(start), wrote)
}
