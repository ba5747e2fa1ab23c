package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// A namespace's usage follows its commits (an overwrite does not count twice, a delete
// and a purge give back), survives a reopen, and a commit past the quota is refused in
// that namespace only, with nothing of it written.
func TestKVQuota(t *testing.T) {
	s := openTest(t, Options{KVQuota: KVQuota{Keys: 10, Bytes: 1 << 20}})
	ctx := context.Background()
	set := func(ns, key, value string) error {
		return s.Commit(ctx, Commit{Namespace: ns, KV: []KVOp{{Kind: OpSet, Key: key, Value: []byte(value)}}})
	}
	for i := range 10 {
		if err := set("greedy", fmt.Sprintf("k%d", i), `"0123456789"`); err != nil {
			t.Fatal(err)
		}
	}
	if err := set("greedy", "k3", `"again"`); err != nil { // an overwrite adds no key
		t.Fatalf("overwrite at the quota: %v", err)
	}
	err := set("greedy", "k10", `1`)
	if !errors.Is(err, ErrQuota) {
		t.Fatalf("the 11th key: %v, want ErrQuota", err)
	}
	if _, ok, _ := s.KVGet("greedy", "k10"); ok {
		t.Fatal("the refused key was written")
	}
	if err := set("modest", "k", `1`); err != nil {
		t.Fatalf("another namespace: %v", err)
	}
	u := s.KVUsage("greedy")
	if u.Keys != 10 {
		t.Fatalf("usage %+v, want 10 keys", u)
	}
	if err := s.Commit(ctx, Commit{Namespace: "greedy", KV: []KVOp{{Kind: OpDel, Key: "k0"}}}); err != nil {
		t.Fatal(err)
	}
	if err := set("greedy", "k10", `1`); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
	want := s.KVUsage("greedy")
	s = reopen(t, s)
	if got := s.KVUsage("greedy"); got != want {
		t.Fatalf("after reopen %+v, before %+v", got, want)
	}
	if err := s.PurgeNamespace("greedy"); err != nil {
		t.Fatal(err)
	}
	if got := s.KVUsage("greedy"); got != (KVUsage{}) {
		t.Fatalf("after purge %+v", got)
	}

	big := openTest(t, Options{KVQuota: KVQuota{Bytes: 4 << 10}})
	v := `"` + strings.Repeat("x", 3000) + `"`
	if err := big.Commit(ctx, Commit{Namespace: "f", KV: []KVOp{{Kind: OpSet, Key: "a", Value: []byte(v)}}}); err != nil {
		t.Fatal(err)
	}
	if err := big.Commit(ctx, Commit{Namespace: "f", KV: []KVOp{{Kind: OpSet, Key: "b", Value: []byte(v)}}}); !errors.Is(err, ErrQuota) {
		t.Fatalf("past the byte quota: %v", err)
	}
}

// Expired keys leave the usage at the next maintenance.
func TestKVUsageForgetsExpired(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	if err := s.Commit(ctx, Commit{Namespace: "f", KV: []KVOp{{Kind: OpSet, Key: "short", Value: []byte(`1`), TTL: time.Second}, {Kind: OpSet, Key: "long", Value: []byte(`1`)}}}); err != nil {
		t.Fatal(err)
	}
	if u := s.KVUsage("f"); u.Keys != 2 {
		t.Fatalf("usage %+v", u)
	}
	time.Sleep(2 * time.Second) // Badger expires by the wall clock
	s.maintainSync()
	if u := s.KVUsage("f"); u.Keys != 1 {
		t.Fatalf("after maintenance %+v, want the expired key gone", u)
	}
}
