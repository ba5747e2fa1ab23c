package store

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestRecentKVAgreesWithBadger runs random KV commits over more keys than the cache
// holds (sets small and large, deletes, increments, keys expired on arrival) and checks
// after each that every read the cache answers is what Badger says, and that the
// committer's increments, staged on cached values, add up after a reopen.
func TestRecentKVAgreesWithBadger(t *testing.T) {
	now := time.Now()
	s := openTest(t, Options{now: func() time.Time { return now }, MaxOutboxBytes: 1 << 30})
	rng := rand.New(rand.NewPCG(1, 2))
	const keys = maxRecentKV + maxRecentKV/2
	counts := map[string]float64{} // the model of the counters, which are never set or deleted
	key := func() string { return fmt.Sprintf("k%05d", rng.IntN(keys)) }
	for round := range 300 {
		now = time.Now()
		var ops []KVOp
		for range 40 {
			k := key()
			switch op := rng.IntN(10); {
			case op < 4:
				ops = append(ops, KVOp{Kind: OpIncr, Key: "n" + k, Delta: 1})
				counts["n"+k]++
			case op < 6:
				ops = append(ops, KVOp{Kind: OpSet, Key: k, Value: fmt.Appendf(nil, "%d", round)})
			case op < 7:
				big := `"` + strings.Repeat("x", maxRecentValue) + `"`
				ops = append(ops, KVOp{Kind: OpSet, Key: k, Value: []byte(big)})
			case op < 8:
				ops = append(ops, KVOp{Kind: OpDel, Key: k})
			default:
				// Expired for Badger, which compares with the wall clock.
				now = time.Now().Add(-time.Hour)
				ops = append(ops, KVOp{Kind: OpSet, Key: k, Value: []byte(`1`), TTL: time.Minute})
			}
		}
		mustCommit(t, s, Commit{Namespace: "fn", KV: ops})
		for range 20 {
			k := key()
			for _, k := range []string{k, "n" + k} {
				if _, cached := s.recent.get(kvKey("fn", k)); !cached {
					continue
				}
				got, ok, err := s.KVGet("fn", k)
				want, wantOK := badgerGet(t, s, kvKey("fn", k))
				if err != nil || ok != wantOK || !bytes.Equal(got, want) {
					t.Fatalf("round %d, %s: cache says %q %v (%v), Badger %q %v", round, k, got, ok, err, want, wantOK)
				}
			}
		}
	}
	if n := len(s.recent.m); n > maxRecentKV {
		t.Errorf("cache holds %d keys, more than %d", n, maxRecentKV)
	}
	s = reopen(t, s)
	for k, n := range counts {
		if got := getKV(t, s, "fn", k); got != fmt.Sprint(n) {
			t.Fatalf("%s = %s after reopen, want %v", k, got, n)
		}
	}
}

func badgerGet(t *testing.T, s *Store, k []byte) ([]byte, bool) {
	t.Helper()
	var v []byte
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err == badger.ErrKeyNotFound {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}
