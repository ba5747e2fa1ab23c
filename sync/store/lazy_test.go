package store

import (
	"fmt"
	"testing"
	"time"
)

// Lazy commits share syncs: with a BatchInterval none of them syncs, and the first
// commit that is not lazy syncs them all with itself; without one, each syncs.
func TestLazyCommitsShareSyncs(t *testing.T) {
	lazy := func(i int) Commit {
		return Commit{Namespace: "fn", Lazy: true, KV: []KVOp{{Kind: OpIncr, Key: "n", Delta: 1}},
			Records: []Append{{Stream: "s", Data: fmt.Appendf(nil, "%d", i)}}}
	}
	s := openTest(t, Options{BatchInterval: time.Hour})
	before := s.Stats().Fsyncs
	for i := range 100 {
		mustCommit(t, s, lazy(i))
	}
	if n := s.Stats().Fsyncs - before; n != 0 {
		t.Fatalf("100 lazy commits synced %d times; want 0 within the batch interval", n)
	}
	if got := getKV(t, s, "fn", "n"); got != "100" {
		t.Fatalf("n = %s after 100 lazy commits: they are not visible", got)
	}
	// A durable commit returns only after a sync, which covers the lazy ones too.
	mustCommit(t, s, Commit{Namespace: "fn", KV: []KVOp{{Kind: OpIncr, Key: "n", Delta: 1}}})
	if n := s.Stats().Fsyncs - before; n != 1 {
		t.Fatalf("a durable commit after 100 lazy ones: %d syncs; want 1", n)
	}
	if s.unsynced {
		t.Fatal("lazy commits left unsynced after a durable commit")
	}

	// Without a batch interval, Lazy changes nothing: every commit syncs.
	plain := openTest(t, Options{})
	before = plain.Stats().Fsyncs
	for i := range 20 {
		mustCommit(t, plain, lazy(i))
	}
	if n := plain.Stats().Fsyncs - before; n != 20 {
		t.Fatalf("20 commits one after another without a batch interval: %d syncs; want 20", n)
	}
}

// A lazy commit is synced by the timer when no durable commit comes, and by Close.
func TestLazyCommitSyncedByTimerAndClose(t *testing.T) {
	s := openTest(t, Options{BatchInterval: 20 * time.Millisecond})
	before := s.Stats().Fsyncs
	mustCommit(t, s, Commit{Namespace: "fn", Lazy: true, KV: []KVOp{{Kind: OpSet, Key: "a", Value: []byte("1")}}})
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Fsyncs == before {
		if time.Now().After(deadline) {
			t.Fatal("a lazy commit was never synced by the batch timer")
		}
		time.Sleep(time.Millisecond)
	}

	s2 := openTest(t, Options{BatchInterval: time.Hour})
	mustCommit(t, s2, Commit{Namespace: "fn", Lazy: true, KV: []KVOp{{Kind: OpSet, Key: "a", Value: []byte("1")}}})
	before = s2.Stats().Fsyncs
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if n := s2.Stats().Fsyncs - before; n != 1 {
		t.Fatalf("close with a lazy commit pending: %d syncs; want 1", n)
	}
}
