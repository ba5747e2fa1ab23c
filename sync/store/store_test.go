package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// openTest opens a store in a fresh directory (or dir, if given) and closes
// it when the test ends.
func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	opts := s.opts
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return openTest(t, opts)
}

func mustCommit(t testing.TB, s *Store, c Commit) {
	t.Helper()
	if err := s.Commit(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

func getKV(t testing.TB, s *Store, ns, key string) string {
	t.Helper()
	v, ok, err := s.KVGet(ns, key)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return "<none>"
	}
	return string(v)
}

func TestKVSetGetDelIncr(t *testing.T) {
	s := openTest(t, Options{})
	mustCommit(t, s, Commit{Namespace: "fn", KV: []KVOp{
		{Kind: OpSet, Key: "a", Value: []byte(`{"x":1}`)},
		{Kind: OpIncr, Key: "n", Delta: 2},
		{Kind: OpIncr, Key: "n", Delta: 3},
		{Kind: OpSet, Key: "gone", Value: []byte(`1`)},
		{Kind: OpDel, Key: "gone"},
		{Kind: OpIncr, Key: "f", Delta: 0.5},
	}})
	mustCommit(t, s, Commit{Namespace: "other", KV: []KVOp{{Kind: OpSet, Key: "a", Value: []byte(`"other"`)}}})
	for key, want := range map[string]string{"a": `{"x":1}`, "n": "5", "gone": "<none>", "f": "0.5"} {
		if got := getKV(t, s, "fn", key); got != want {
			t.Errorf("fn/%s = %s, want %s", key, got, want)
		}
	}
	if got := getKV(t, s, "other", "a"); got != `"other"` {
		t.Errorf("other/a = %s", got)
	}
	s = reopen(t, s)
	if got := getKV(t, s, "fn", "n"); got != "5" {
		t.Errorf("after reopen fn/n = %s, want 5", got)
	}
}

func TestIncrOnStringFailsWholeCommit(t *testing.T) {
	s := openTest(t, Options{})
	mustCommit(t, s, Commit{Namespace: "fn", KV: []KVOp{{Kind: OpSet, Key: "s", Value: []byte(`"text"`)}}})
	err := s.Commit(context.Background(), Commit{Namespace: "fn",
		KV:      []KVOp{{Kind: OpSet, Key: "a", Value: []byte(`1`)}, {Kind: OpIncr, Key: "s", Delta: 1}},
		Records: []Append{{Stream: "st", Data: []byte(`{}`)}},
	})
	if !errors.Is(err, ErrNotNumber) {
		t.Fatalf("incr on a string: err = %v, want ErrNotNumber", err)
	}
	if got := getKV(t, s, "fn", "a"); got != "<none>" {
		t.Errorf("a = %s after a failed commit", got)
	}
	if recs, _ := s.Read("st", 0, 0, 0); len(recs) != 0 {
		t.Errorf("%d records after a failed commit", len(recs))
	}
}

func TestKVTTLAndKeys(t *testing.T) {
	now := time.Now()
	s := openTest(t, Options{now: func() time.Time { return now }})
	var ops []KVOp
	for i := range 20 {
		ops = append(ops, KVOp{Kind: OpSet, Key: fmt.Sprintf("k%02d", i), Value: []byte(fmt.Sprint(i))})
	}
	// Already expired for Badger, which compares with the wall clock.
	now = now.Add(-time.Hour)
	ops = append(ops, KVOp{Kind: OpSet, Key: "k99", Value: []byte(`1`), TTL: time.Minute})
	mustCommit(t, s, Commit{Namespace: "fn", KV: ops})
	keys, err := s.KVKeys("fn", "k1", 5)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keys) != "[k10 k11 k12 k13 k14]" {
		t.Errorf("keys = %v", keys)
	}
	all, _ := s.KVKeys("fn", "", 0)
	if len(all) != 20 {
		t.Errorf("%d keys, want 20 (k99 expired)", len(all))
	}
	if got := getKV(t, s, "fn", "k99"); got != "<none>" {
		t.Errorf("expired key read as %s", got)
	}
	if err := s.PurgeNamespace("fn"); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.KVKeys("fn", "", 0); len(all) != 0 {
		t.Errorf("%d keys after purge", len(all))
	}
}

func TestOutboxAppendReadAckTrim(t *testing.T) {
	s := openTest(t, Options{})
	if err := s.RegisterConsumer("a", []string{"*"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterConsumer("b", []string{"alerts"}); err != nil {
		t.Fatal(err)
	}
	changed := s.Changed()
	for i := range 10 {
		mustCommit(t, s, Commit{Namespace: "fn", Records: []Append{{Stream: "alerts", Function: "fn", Data: []byte(fmt.Sprint(i)), TS: int64(i)}}})
	}
	select {
	case <-changed:
	default:
		t.Error("Changed not signalled")
	}
	recs, err := s.Read("alerts", 0, 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 || recs[0].Seq != 1 || recs[3].Seq != 4 || string(recs[2].Data) != "2" || recs[1].Function != "fn" {
		t.Fatalf("read = %+v", recs)
	}
	if recs[0].ID >= recs[1].ID {
		t.Errorf("ids not increasing: %s %s", recs[0].ID, recs[1].ID)
	}
	if err := s.Ack("a", "alerts", 6); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats().Streams["alerts"]; st.Pending != 10 {
		t.Errorf("pending %d after one of two consumers acked, want 10", st.Pending)
	}
	if err := s.Ack("b", "alerts", 4); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if ss := st.Streams["alerts"]; ss.Pending != 6 || ss.FirstSeq != 5 {
		t.Errorf("stream after acks 6 and 4: %+v", ss)
	}
	if cs := st.Consumers["b"]["alerts"]; cs.Cursor != 4 || cs.Pending != 6 {
		t.Errorf("consumer b: %+v", cs)
	}
	if recs, _ := s.Read("alerts", 0, 0, 0); len(recs) != 6 || recs[0].Seq != 5 {
		t.Errorf("after trim read %d records from seq %d", len(recs), recs[0].Seq)
	}
	// Seqs and cursors survive a reopen; seqs go on from the last.
	s = reopen(t, s)
	s.RegisterConsumer("a", []string{"*"})
	if c, _ := s.Cursor("b", "alerts"); c != 4 {
		t.Errorf("cursor after reopen = %d", c)
	}
	out, err := s.Append(context.Background(), Append{Stream: "alerts", Data: []byte(`"x"`)})
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Seq != 11 {
		t.Errorf("seq after reopen = %d, want 11", out[0].Seq)
	}
}

// maintain runs the periodic maintenance now and waits for it.
func (s *Store) maintainSync() {
	reply := make(chan struct{})
	s.maintainNow <- reply
	<-reply
}

// Reads after Close fail with ErrClosed; Badger itself would panic.
func TestReadAfterClose(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read("a", 0, 10, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v, want ErrClosed", err)
	}
	if _, _, err := s.KVGet("f", "k"); !errors.Is(err, ErrClosed) {
		t.Errorf("KVGet after Close: %v, want ErrClosed", err)
	}
}

// Ping answers while the committer is free, and says so once the store is closed. (That
// it does not answer while a sync hangs is shown end to end by cmd/moongate's
// TestWatchdogStopsWhileTheStoreHangs, on a stalled device.)
func TestPing(t *testing.T) {
	s := openTest(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Commit(ctx, Commit{Namespace: "f", KV: []KVOp{{Kind: OpSet, Key: "k", Value: []byte("1")}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ping an idle store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("ping a closed store: %v, want ErrClosed", err)
	}
}
