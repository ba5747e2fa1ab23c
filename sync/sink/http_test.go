package sink

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func httpConfig(url string) Config {
	return Config{
		Name: "cloud", GatewayID: "pi-kitchen",
		HTTP:    &HTTPConfig{URL: url, HMACSecret: "s3cret", Headers: map[string]string{"Authorization": "Bearer tok"}, Timeout: 5 * time.Second},
		Batch:   Batch{Linger: -1},
		Backoff: fast,
	}
}

func TestHTTPWireFormat(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, nil)
	s, err := New(httpConfig(rc.url()), st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, st, "alerts", 0, 3)
	stop := run(t, s)
	eventually(t, 5*time.Second, "the batch acknowledged", func() bool { return pending(st, "cloud", "alerts") == 0 })
	stop()

	reqs := rc.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	recs, _ := st.Read("alerts", 0, 0, 0) // trimmed: read what the receiver got instead
	if len(recs) != 0 {
		t.Errorf("%d records left in the outbox after the ack", len(recs))
	}
	for k, want := range map[string]string{
		"Content-Type":    "application/json",
		"Authorization":   "Bearer tok",
		"Idempotency-Key": r.batch.Records[0].ID + "-" + r.batch.Records[2].ID,
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write(r.wire)
	if got, want := r.header.Get("X-Moongate-Signature"), "sha256="+hex.EncodeToString(mac.Sum(nil)); got != want {
		t.Errorf("signature %q, want %q", got, want)
	}
	// The exact shape of SPEC §7, keys and all.
	var body map[string]any
	if err := json.Unmarshal(r.wire, &body); err != nil {
		t.Fatal(err)
	}
	if body["gateway"] != "pi-kitchen" || body["stream"] != "alerts" || len(body) != 3 {
		t.Errorf("envelope %v", body)
	}
	rec0 := body["records"].([]any)[0].(map[string]any)
	if len(rec0) != 5 || rec0["seq"] != 1.0 || rec0["function"] != "fn" || rec0["data"].(map[string]any)["n"] != 0.0 {
		t.Errorf("record %v", rec0)
	}
	if ts, _ := rec0["ts"].(float64); time.Since(time.UnixMilli(int64(ts))) > time.Minute {
		t.Errorf("ts %v", rec0["ts"])
	}
	if st := s.Status(); st.State != Online || st.Delivered != 3 || st.LastSuccess.IsZero() || st.PendingRecords != 0 || st.Kind != "http" {
		t.Errorf("status %+v", st)
	}
}

func TestHTTPBatchBounds(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, nil)
	cfg := httpConfig(rc.url())
	cfg.Batch = Batch{MaxRecords: 7, MaxBytes: 1000, Linger: -1}
	s, err := New(cfg, st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, st, "a", 0, 100)
	run(t, s)
	eventually(t, 5*time.Second, "all acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	for _, r := range rc.requests() {
		if len(r.batch.Records) > 7 {
			t.Errorf("request %d: %d records, max 7", r.n, len(r.batch.Records))
		}
		if len(r.wire) > 1000 {
			t.Errorf("request %d: %d bytes, max 1000", r.n, len(r.wire))
		}
	}
	checkOrder(t, rc.requests(), "a", 100)

	// Records of about 430 bytes encoded: two fit under 1000 bytes, not three.
	big := `{"pad":"` + strings.Repeat("x", 330) + `"}`
	if _, err := st.Append(t.Context(), appendRec("b", big), appendRec("b", big), appendRec("b", big), appendRec("b", big), appendRec("b", big)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "big records acknowledged", func() bool { return pending(st, "cloud", "b") == 0 })
	var sizes []int
	for _, r := range rc.requests() {
		if r.batch.Stream == "b" {
			sizes = append(sizes, len(r.batch.Records))
		}
	}
	if len(sizes) != 3 || sizes[0] != 2 || sizes[1] != 2 || sizes[2] != 1 {
		t.Errorf("batch sizes %v, want [2 2 1]", sizes)
	}
}

func TestHTTPLingerGathersABatch(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, nil)
	cfg := httpConfig(rc.url())
	cfg.Batch = Batch{Linger: time.Second}
	s, err := New(cfg, st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	// Records arriving one by one within the linger go out together.
	for i := range 5 {
		appendN(t, st, "live", i, 1)
		time.Sleep(20 * time.Millisecond)
	}
	eventually(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "live") == 0 })
	if reqs := rc.requests(); len(reqs) != 1 || len(reqs[0].batch.Records) != 5 {
		t.Fatalf("%d requests, want one with all 5 records", len(reqs))
	}
}

func TestHTTPPipelinedOrderThroughFailures(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	var s *Sink
	var mu sync.Mutex
	maxInFlight := int64(0)
	rc := newReceiver(t, func(r *request) reply {
		mu.Lock()
		maxInFlight = max(maxInFlight, s.Status().InFlight)
		mu.Unlock()
		switch {
		case r.n%7 == 3:
			return reply{status: http.StatusInternalServerError, body: "boom"}
		case r.n%11 == 5:
			return reply{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "0"}}
		case r.n%13 == 8:
			return reply{hangup: true}
		}
		return reply{status: http.StatusOK, delay: 2 * time.Millisecond}
	})
	cfg := httpConfig(rc.url())
	cfg.Batch.MaxRecords = 50
	cfg.Window = 4
	var err error
	s, err = New(cfg, st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, st, "a", 0, 3000)
	run(t, s)
	// Live records keep arriving while the backlog drains.
	appendN(t, st, "a", 3000, 500)
	eventually(t, 20*time.Second, "all acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	checkOrder(t, rc.requests(), "a", 3500)
	mu.Lock()
	defer mu.Unlock()
	if maxInFlight <= 50 {
		t.Errorf("at most %d records in flight: never more than one batch", maxInFlight)
	}
	if st := s.Status(); st.Retried == 0 || st.Delivered < 3500 {
		t.Errorf("status %+v", st)
	}
}

func TestHTTPPoisonRecordGoesToDead(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, func(r *request) reply {
		for _, rec := range r.batch.Records {
			if string(rec.Data) == `{"n":137}` {
				return reply{status: http.StatusUnprocessableEntity, body: `{"error":"n must not be 137"}`}
			}
		}
		return reply{status: http.StatusOK}
	})
	cfg := httpConfig(rc.url())
	cfg.Batch.MaxRecords = 100
	s, err := New(cfg, st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, st, "a", 0, 300)
	run(t, s)
	eventually(t, 10*time.Second, "all acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	reqs := rc.requests()
	checkOrder(t, reqs, "a", 300, 138)
	// 3 batches, and 2 requests per halving of the bad one (100 -> 1: 7 halvings).
	if len(reqs) > 3+2*7 {
		t.Errorf("%d requests to isolate one record", len(reqs))
	}
	dead, err := st.Read(DeadStream, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 {
		t.Fatalf("%d dead records, want 1", len(dead))
	}
	var d deadRecord
	if err := json.Unmarshal(dead[0].Data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Sink != "cloud" || d.Stream != "a" || d.Seq != 138 || string(d.Data) != `{"n":137}` || dead[0].Function != "fn" ||
		!strings.Contains(d.Error, "422") || !strings.Contains(d.Error, "must not be 137") {
		t.Errorf("dead record %+v", d)
	}
	if st := s.Status(); st.Dropped["dead_letter"] != 1 || st.Delivered != 299 {
		t.Errorf("status %+v", st)
	}
}

func TestHTTPRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value func() string
		min   time.Duration
	}{
		{"seconds", func() string { return "1" }, 900 * time.Millisecond},
		{"date", func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }, 900 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t, t.TempDir())
			defer st.Close()
			rc := newReceiver(t, func(r *request) reply {
				if r.n == 0 {
					return reply{status: http.StatusServiceUnavailable, header: map[string]string{"Retry-After": tc.value()}}
				}
				return reply{status: http.StatusOK}
			})
			var logs logBuffer
			s, err := New(httpConfig(rc.url()), st, nil, logs.logger())
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, st, "a", 0, 10)
			run(t, s)
			eventually(t, 10*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
			reqs := rc.requests()
			if len(reqs) != 2 {
				t.Fatalf("%d requests, want 2", len(reqs))
			}
			// Backoff alone would have retried within 5ms.
			if gap := reqs[1].at.Sub(reqs[0].at); gap < tc.min {
				t.Errorf("retried after %v, Retry-After said %s", gap, reqs[0].header.Get("Retry-After"))
			}
			if n := logs.count("to=backing_off"); n != 1 {
				t.Errorf("backing_off logged %d times", n)
			}
			if n := logs.count("to=online"); n != 1 {
				t.Errorf("online logged %d times", n)
			}
		})
	}
}

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                                 0,
		"0":                                0,
		"120":                              2 * time.Minute,
		" 7 ":                              7 * time.Second,
		"-3":                               0,
		"soon":                             0,
		"99999999999999999999":             maxRetryAfter,
		"Thu, 02 Jan 2025 03:04:35 GMT":    30 * time.Second,
		"Thu, 02 Jan 2025 03:00:00 GMT":    0,
		"Thursday, 02-Jan-25 03:05:05 GMT": time.Minute,
		"Fri, 03 Jan 2025 03:04:05 GMT":    maxRetryAfter,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestHTTPOutageAndRecovery(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, nil)
	var logs logBuffer
	cfg := httpConfig(rc.url())
	cfg.Batch.MaxRecords = 100
	s, err := New(cfg, st, nil, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	appendN(t, st, "a", 0, 100)
	eventually(t, 5*time.Second, "first records acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })

	rc.stop() // the listener is gone: connections are refused
	appendN(t, st, "a", 100, 1000)
	eventually(t, 5*time.Second, "offline", func() bool { return s.Status().State == Offline })
	time.Sleep(200 * time.Millisecond) // many retries
	if st := s.Status(); st.PendingRecords != 1000 || st.Lag <= 0 || !strings.Contains(st.LastError, "refused") {
		t.Errorf("status during the outage: %+v", st)
	}
	rc.restart()
	eventually(t, 10*time.Second, "backlog acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	checkOrder(t, rc.requests(), "a", 1100)
	if st := s.Status(); st.State != Online || st.Lag != 0 {
		t.Errorf("status after: %+v", st)
	}
	if n := logs.count("to=offline"); n != 1 {
		t.Errorf("offline logged %d times:\n%s", n, logs.buf.String())
	}
	if n := logs.count("to=online"); n != 1 {
		t.Errorf("online logged %d times", n)
	}
}

func TestHTTPConnectionClosedMidResponse(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, func(r *request) reply {
		if r.n < 3 {
			return reply{hangup: true}
		}
		return reply{status: http.StatusOK}
	})
	s, err := New(httpConfig(rc.url()), st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, st, "a", 0, 20)
	run(t, s)
	eventually(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	checkOrder(t, rc.requests(), "a", 20)
	if st := s.Status(); st.Retried != 60 || st.Delivered != 20 {
		t.Errorf("status %+v", st)
	}
}
