package sink

import (
	"net/http"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store"
	"github.com/moongate/moongate/sync/store/storetest"
)

// A crash mid-drain: acks stop reaching the disk, the store is closed and
// reopened. The next run resends from the durable cursor, in order, with the
// same ids and keys, and delivers everything.
func TestResumeFromCursorAfterCrash(t *testing.T) {
	dir := t.TempDir()
	st := &crashable{Store: storetest.Open(t, dir)}
	rc := newReceiver(t, func(*request) reply { return reply{status: http.StatusOK, delay: time.Millisecond} })
	cfg := httpConfig(rc.url())
	cfg.Batch.MaxRecords = 50
	s := newSink(t, cfg, st, nil, nil)
	appendN(t, st.Store, "a", 0, 5000)
	stop := run(t, s)
	poll.Within(t, 10*time.Second, "a part delivered", func() bool { return len(rc.requests()) >= 20 })
	st.crashed.Store(true)
	stop()
	st.Close()
	first := len(rc.requests())

	st2 := storetest.Open(t, dir)
	defer st2.Close()
	cursor, _ := st2.Cursor("cloud", "a")
	if cursor == 0 || cursor >= 5000 {
		t.Fatalf("cursor %d after the crash", cursor)
	}
	s = newSink(t, cfg, st2, nil, nil)
	run(t, s)
	poll.Within(t, 20*time.Second, "all delivered", func() bool { return pending(st2, "cloud", "a") == 0 })
	reqs := rc.requests()
	total := checkOrder(t, reqs, "a", 5000)
	// Resent: what was in flight or acknowledged after the last cursor write.
	if dup := total - 5000; dup <= 0 || dup > 2000 {
		t.Errorf("%d records received twice", dup)
	}
	keys := make(map[uint64]string)
	for _, r := range reqs[:first] {
		keys[r.batch.Records[0].Seq] = r.header.Get("Idempotency-Key")
	}
	resent := 0
	for _, r := range reqs[first:] {
		if k, ok := keys[r.batch.Records[0].Seq]; ok {
			resent++
			if k != r.header.Get("Idempotency-Key") {
				t.Errorf("batch from seq %d resent with key %s, first sent as %s", r.batch.Records[0].Seq, r.header.Get("Idempotency-Key"), k)
			}
		}
	}
	if resent == 0 {
		t.Error("no batch resent after the crash")
	}
}

// A batch cut short by linger is resent after a crash with the same bounds,
// and so the same Idempotency-Key, even though more records arrived since.
func TestShortBatchKeepsItsKeyAcrossCrash(t *testing.T) {
	dir := t.TempDir()
	st := &crashable{Store: storetest.Open(t, dir)}
	release := make(chan struct{})
	rc := newReceiver(t, func(r *request) reply {
		if r.n == 0 {
			<-release // never answered before the crash
		}
		return reply{status: http.StatusOK}
	})
	defer close(release)
	cfg := httpConfig(rc.url())
	cfg.Batch.Linger = 20 * time.Millisecond
	s := newSink(t, cfg, st, nil, nil)
	appendN(t, st.Store, "a", 0, 3)
	stop := run(t, s)
	poll.Within(t, 5*time.Second, "the short batch sent", func() bool { return len(rc.requests()) == 1 })
	st.crashed.Store(true)
	stop()
	st.Close()

	st2 := storetest.Open(t, dir)
	defer st2.Close()
	appendN(t, st2, "a", 3, 10)
	s = newSink(t, cfg, st2, nil, nil)
	run(t, s)
	poll.Within(t, 5*time.Second, "all delivered", func() bool { return pending(st2, "cloud", "a") == 0 })
	reqs := rc.requests()
	if k0, k1 := reqs[0].header.Get("Idempotency-Key"), reqs[1].header.Get("Idempotency-Key"); k0 != k1 || len(reqs[1].batch.Records) != 3 {
		t.Errorf("resent as %s with %d records, first sent as %s with 3", k1, len(reqs[1].batch.Records), k0)
	}
	reqs[0].status = 0 // never answered
	checkOrder(t, reqs, "a", 13)
}

// The outbox fills up during an outage; drop_oldest applies. After the
// outage the sink delivers what is left, in order, and counts what it missed.
func TestQuotaReachedDuringOutage(t *testing.T) {
	st := storetest.Open(t, t.TempDir(), func(o *store.Options) { o.MaxOutboxBytes = 64 << 10 })
	defer st.Close()
	rc := newReceiver(t, nil)
	cfg := httpConfig(rc.url())
	cfg.Batch.MaxRecords = 100
	s := newSink(t, cfg, st, nil, nil)
	run(t, s)
	appendN(t, st, "a", 0, 100)
	poll.Within(t, 5*time.Second, "delivered before the outage", func() bool { return pending(st, "cloud", "a") == 0 })
	rc.stop()
	for i := 100; i < 5100; i += 100 {
		appendN(t, st, "a", i, 100)
	}
	stats := st.Stats().Streams["a"]
	if stats.Dropped.Quota == 0 {
		t.Fatalf("the quota was not reached: %+v", stats)
	}
	rc.restart()
	poll.Within(t, 10*time.Second, "delivered after the outage", func() bool { return pending(st, "cloud", "a") == 0 })

	status := s.Status()
	got := make(map[uint64]bool)
	for _, r := range rc.requests() {
		if r.status == http.StatusOK {
			for _, rec := range r.batch.Records {
				got[rec.Seq] = true
			}
		}
	}
	missed := uint64(5100 - len(got))
	// A record the quota drops after the sink read it into a batch is still
	// delivered from that batch (seen in CI: the batch of the outage's first
	// request, resent after it): counted as a drop by the store, not missed.
	if status.Missed != missed || status.Dropped["quota"] != st.Stats().Streams["a"].Dropped.Quota || status.Missed > status.Dropped["quota"] {
		t.Errorf("missed %d records; status says missed %d, quota drops %d", missed, status.Missed, status.Dropped["quota"])
	}
	// What is left is the newest records, all of them, in order.
	for seq := uint64(5100); seq > 5100-uint64(len(got))+100; seq-- {
		if !got[seq] {
			t.Fatalf("seq %d lost though a newer record was kept", seq)
		}
	}
	if status.Delivered != uint64(len(got)) {
		t.Errorf("Delivered %d, the receiver got %d distinct records", status.Delivered, len(got))
	}
}
