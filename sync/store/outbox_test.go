package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// clock is a settable clock for record times and TTL.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func appendOne(t testing.TB, s *Store, stream string, data string) Record {
	t.Helper()
	out, err := s.Append(context.Background(), Append{Stream: stream, Data: []byte(data)})
	if err != nil {
		t.Fatal(err)
	}
	return out[0]
}

// recordSize is the accounted size of a record appended by appendOne.
func recordSize(t testing.TB, stream, data string) int64 {
	s := openTest(t, Options{})
	appendOne(t, s, stream, data)
	return s.Stats().PendingBytes
}

func TestQuotaDropOldest(t *testing.T) {
	size := recordSize(t, "a", `"0123456789"`)
	clk := &clock{time.Unix(1_700_000_000, 0)}
	s := openTest(t, Options{MaxOutboxBytes: 10 * size, now: clk.now})
	// a gets 5 old records, b 5 newer ones, then a 5 newest: the old a's go first.
	for _, stream := range []string{"a", "b", "a"} {
		for range 5 {
			appendOne(t, s, stream, `"0123456789"`)
			clk.t = clk.t.Add(time.Second)
		}
	}
	st := s.Stats()
	if st.PendingBytes > 10*size {
		t.Errorf("%d bytes pending, over the quota of %d", st.PendingBytes, 10*size)
	}
	if a := st.Streams["a"]; a.Pending != 5 || a.FirstSeq != 6 || a.Dropped.Quota != 5 {
		t.Errorf("stream a: %+v, want seqs 6..10 and 5 dropped", a)
	}
	if b := st.Streams["b"]; b.Pending != 5 || b.Dropped.Quota != 0 {
		t.Errorf("stream b: %+v", b)
	}
	if st.Dropped.Quota != 5 {
		t.Errorf("dropped total %+v", st.Dropped)
	}
	recs, _ := s.Read("a", 0, 0, 0)
	if len(recs) != 5 || recs[0].Seq != 6 {
		t.Errorf("read a: %d records from seq %d", len(recs), recs[0].Seq)
	}
	// Counters and heads survive a reopen.
	s = reopen(t, s)
	if a := s.Stats().Streams["a"]; a.Dropped.Quota != 5 || a.FirstSeq != 6 || a.Bytes != 5*size {
		t.Errorf("after reopen a: %+v", a)
	}
	// Records dropped from a group not yet written: one commit that pushes out
	// everything older.
	var recsIn []Append
	for range 10 {
		recsIn = append(recsIn, Append{Stream: "a", Data: []byte(`"0123456789"`)})
	}
	if _, err := s.Append(context.Background(), recsIn...); err != nil {
		t.Fatal(err)
	}
	st = s.Stats()
	if st.PendingRecords != 10 || st.Streams["b"].Pending != 0 || st.Streams["a"].FirstSeq != 11 {
		t.Errorf("after a full-quota append: %+v", st.Streams)
	}
}

func TestQuotaRejectNew(t *testing.T) {
	size := recordSize(t, "a", `1`)
	s := openTest(t, Options{MaxOutboxBytes: 3 * size, OnFull: RejectNew})
	for range 3 {
		mustCommit(t, s, Commit{Namespace: "f", Records: []Append{{Stream: "a", Data: []byte(`1`)}}})
	}
	err := s.Commit(context.Background(), Commit{Namespace: "f",
		KV:      []KVOp{{Kind: OpIncr, Key: "n", Delta: 1}},
		Records: []Append{{Stream: "a", Data: []byte(`1`)}}})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("commit over quota: %v, want ErrFull", err)
	}
	if got := getKV(t, s, "f", "n"); got != "<none>" {
		t.Errorf("KV of a rejected commit applied: %s", got)
	}
	st := s.Stats()
	if st.Streams["a"].Pending != 3 || st.Dropped.Rejected != 1 || st.Streams["a"].Dropped.Rejected != 1 {
		t.Errorf("after reject: %+v", st)
	}
	// Room again once a consumer has the records.
	s.RegisterConsumer("sink", []string{"*"})
	if err := s.Ack("sink", "a", 3); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, s, Commit{Namespace: "f", Records: []Append{{Stream: "a", Data: []byte(`1`)}}})
}

func TestQuotaSingleCommitTooBig(t *testing.T) {
	s := openTest(t, Options{MaxOutboxBytes: 100})
	_, err := s.Append(context.Background(), Append{Stream: "a", Data: fmt.Appendf(nil, `"%0200d"`, 1)})
	if !errors.Is(err, ErrFull) {
		t.Errorf("record larger than the quota: %v, want ErrFull", err)
	}
}

func TestOutboxTTL(t *testing.T) {
	clk := &clock{time.Unix(1_700_000_000, 0)}
	s := openTest(t, Options{OutboxTTL: time.Hour, now: clk.now})
	for range 3 {
		appendOne(t, s, "old", `1`)
	}
	appendOne(t, s, "$dead", `1`)
	clk.t = clk.t.Add(30 * time.Minute)
	appendOne(t, s, "old", `2`)
	clk.t = clk.t.Add(45 * time.Minute) // first three and $dead are 75 min old
	s.maintainSync()
	st := s.Stats()
	if o := st.Streams["old"]; o.Pending != 1 || o.FirstSeq != 4 || o.Dropped.TTL != 3 {
		t.Errorf("stream old after TTL: %+v", o)
	}
	if d := st.Streams["$dead"]; d.Pending != 0 || d.Dropped.TTL != 1 {
		t.Errorf("$dead after TTL: %+v", d)
	}
	if recs, _ := s.Read("old", 0, 0, 0); len(recs) != 1 || string(recs[0].Data) != "2" {
		t.Errorf("read after TTL: %+v", recs)
	}
}

func TestTrimRules(t *testing.T) {
	s := openTest(t, Options{})
	s.RegisterConsumer("cloud", []string{"*"})
	s.RegisterConsumer("iot", []string{"telemetry"})
	for range 3 {
		appendOne(t, s, "telemetry", `1`)
		appendOne(t, s, "alerts", `1`)
		appendOne(t, s, "$dead", `1`)
		appendOne(t, s, "lonely", `1`)
	}
	for _, stream := range []string{"telemetry", "alerts", "lonely"} {
		if err := s.Ack("cloud", stream, 3); err != nil {
			t.Fatal(err)
		}
	}
	// "*" does not take $dead: acking it moves the cursor but trims nothing.
	if err := s.Ack("cloud", "$dead", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("cloud", "alerts", 2); err != nil { // backwards: ignored
		t.Fatal(err)
	}
	if err := s.Ack("cloud", "alerts", 9); !errors.Is(err, ErrInvalid) {
		t.Errorf("ack beyond the last seq: %v", err)
	}
	st := s.Stats()
	for stream, want := range map[string]int64{"telemetry": 3, "alerts": 0, "$dead": 3, "lonely": 0} {
		if got := st.Streams[stream].Pending; got != want {
			t.Errorf("%s: %d pending, want %d", stream, got, want)
		}
	}
	if c, _ := s.Cursor("cloud", "alerts"); c != 3 {
		t.Errorf("cursor moved backwards to %d", c)
	}
	if cs := st.Consumers["iot"]["telemetry"]; cs.Pending != 3 || cs.OldestMs == 0 {
		t.Errorf("iot: %+v", cs)
	}
	if _, ok := st.Consumers["iot"]["alerts"]; ok {
		t.Error("iot listed on a stream it does not take")
	}
	if err := s.Ack("iot", "telemetry", 3); err != nil {
		t.Fatal(err)
	}
	if got := s.Stats().Streams["telemetry"].Pending; got != 0 {
		t.Errorf("telemetry: %d pending after both consumers acked", got)
	}
}

func TestReadLimits(t *testing.T) {
	s := openTest(t, Options{})
	for i := range 10 {
		appendOne(t, s, "s", fmt.Sprintf(`"%0100d"`, i))
	}
	one := s.Stats().Streams["s"].Bytes / 10
	recs, err := s.Read("s", 3, 0, int(3*one))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0].Seq != 4 {
		t.Errorf("maxBytes 3 records: got %d from %d", len(recs), recs[0].Seq)
	}
	if recs, _ := s.Read("s", 0, 0, 1); len(recs) != 1 {
		t.Errorf("maxBytes smaller than a record: %d records, want 1", len(recs))
	}
	if recs, _ := s.Read("s", 10, 5, 0); len(recs) != 0 {
		t.Errorf("read past the end: %d records", len(recs))
	}
	if recs, _ := s.Read("t", 0, 5, 0); len(recs) != 0 {
		t.Errorf("read of an unknown stream: %d records", len(recs))
	}
}

func TestClosed(t *testing.T) {
	s := openTest(t, Options{})
	s.Close()
	if err := s.Commit(context.Background(), Commit{Namespace: "f", KV: []KVOp{{Kind: OpIncr, Key: "n", Delta: 1}}}); !errors.Is(err, ErrClosed) {
		t.Errorf("commit after close: %v", err)
	}
	if _, _, err := s.KVGet("f", "n"); !errors.Is(err, ErrClosed) {
		t.Errorf("get after close: %v", err)
	}
	if _, err := s.Read("s", 0, 1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
}

func TestVersionsAndMeta(t *testing.T) {
	s := openTest(t, Options{})
	for v := 1; v <= 3; v++ {
		if err := s.PutVersion("fn", v, fmt.Appendf(nil, `{"v":%d}`, v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetActive("fn", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.SetActive("fn", 7); !errors.Is(err, ErrNotFound) {
		t.Errorf("activate a missing version: %v", err)
	}
	mustCommit(t, s, Commit{Namespace: "fn", KV: []KVOp{{Kind: OpIncr, Key: "n", Delta: 1}}})
	if err := s.PutMeta("gateway", []byte(`{"boot":1}`)); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	vs, err := s.Versions("fn")
	if err != nil || len(vs) != 3 || string(vs[2]) != `{"v":3}` {
		t.Errorf("versions = %q, %v", vs, err)
	}
	if act, _ := s.Active(); act["fn"] != 2 {
		t.Errorf("active = %v", act)
	}
	if m, ok, _ := s.GetMeta("gateway"); !ok || string(m) != `{"boot":1}` {
		t.Errorf("meta = %s %v", m, ok)
	}
	if err := s.DeleteFunction("fn"); err != nil {
		t.Fatal(err)
	}
	if vs, _ := s.Versions("fn"); len(vs) != 3 {
		t.Errorf("%d versions after delete, want the 3 of its history", len(vs))
	}
	if act, _ := s.Active(); len(act) != 0 {
		t.Errorf("active after delete: %v", act)
	}
	if got := getKV(t, s, "fn", "n"); got != "1" {
		t.Errorf("KV deleted without purge: %s", got)
	}
	if err := s.PurgeNamespace("fn"); err != nil {
		t.Fatal(err)
	}
	if got := getKV(t, s, "fn", "n"); got != "<none>" {
		t.Errorf("KV kept after purge: %s", got)
	}
}

// A noisy stream sheds its own records first: the billing records, older but few, are
// kept while the junk stream that fills the outbox loses its oldest. With a per-stream
// quota the junk stream is held to it even while the outbox has room.
func TestQuotaNoisyStreamShedsItsOwn(t *testing.T) {
	size := recordSize(t, "junk", `"0123456789"`)
	clk := &clock{time.Unix(1_700_000_000, 0)}
	s := openTest(t, Options{MaxOutboxBytes: 20 * size, now: clk.now})
	for range 3 {
		appendOne(t, s, "bill", `"0123456789"`)
		clk.t = clk.t.Add(time.Second)
	}
	for range 100 {
		appendOne(t, s, "junk", `"0123456789"`)
		clk.t = clk.t.Add(time.Second)
	}
	st := s.Stats()
	if b := st.Streams["bill"]; b.Pending != 3 || b.Dropped.Quota != 0 {
		t.Fatalf("billing: %+v: a quiet stream lost records to a noisy one", b)
	}
	if j := st.Streams["junk"]; j.Pending != 17 || j.Dropped.Quota != 83 || j.FirstSeq != 84 {
		t.Fatalf("junk: %+v, want its newest 17", j)
	}

	s = openTest(t, Options{MaxOutboxBytes: 20 * size, MaxStreamBytes: 5 * size, now: clk.now})
	for range 10 {
		appendOne(t, s, "junk", `"0123456789"`)
	}
	appendOne(t, s, "bill", `"0123456789"`)
	st = s.Stats()
	if j := st.Streams["junk"]; j.Pending != 5 || j.Dropped.Quota != 5 {
		t.Fatalf("junk under a stream quota of 5: %+v", j)
	}
	if b := st.Streams["bill"]; b.Pending != 1 {
		t.Fatalf("billing: %+v", b)
	}
	var many []Append
	for range 6 {
		many = append(many, Append{Stream: "junk", Data: []byte(`"0123456789"`)})
	}
	if _, err := s.Append(context.Background(), many...); !errors.Is(err, ErrFull) {
		t.Fatalf("one commit over the stream quota: %v, want ErrFull", err)
	}
}
