package sink

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store"
	"github.com/moongate/moongate/sync/store/storetest"
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
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, nil)
	s := newSink(t, httpConfig(rc.url()), st, nil, nil)
	appendN(t, st, "alerts", 0, 3)
	stop := run(t, s)
	poll.Within(t, 5*time.Second, "the batch acknowledged", func() bool { return pending(st, "cloud", "alerts") == 0 })
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
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, nil)
	cfg := httpConfig(rc.url())
	cfg.Batch = Batch{MaxRecords: 7, MaxBytes: 1000, Linger: -1}
	s := newSink(t, cfg, st, nil, nil)
	appendN(t, st, "a", 0, 100)
	run(t, s)
	poll.Within(t, 5*time.Second, "all acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
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
	poll.Within(t, 5*time.Second, "big records acknowledged", func() bool { return pending(st, "cloud", "b") == 0 })
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
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, nil)
	cfg := httpConfig(rc.url())
	cfg.Batch = Batch{Linger: time.Second}
	s := newSink(t, cfg, st, nil, nil)
	run(t, s)
	// Records arriving one by one within the linger go out together.
	for i := range 5 {
		appendN(t, st, "live", i, 1)
		time.Sleep(20 * time.Millisecond)
	}
	poll.Within(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "live") == 0 })
	if reqs := rc.requests(); len(reqs) != 1 || len(reqs[0].batch.Records) != 5 {
		t.Fatalf("%d requests, want one with all 5 records", len(reqs))
	}
}

func TestHTTPPipelinedOrderThroughFailures(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
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
	s = newSink(t, cfg, st, nil, nil)
	appendN(t, st, "a", 0, 3000)
	run(t, s)
	// Live records keep arriving while the backlog drains.
	appendN(t, st, "a", 3000, 500)
	poll.Within(t, 20*time.Second, "all acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
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
	st := storetest.Open(t, t.TempDir())
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
	s := newSink(t, cfg, st, nil, nil)
	appendN(t, st, "a", 0, 300)
	run(t, s)
	poll.Within(t, 10*time.Second, "all acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	reqs := rc.requests()
	checkOrder(t, reqs, "a", 300, 138)
	// 3 batches, and 2 requests per halving of the bad one (100 -> 1: 7 halvings).
	if len(reqs) > 3+2*7 {
		t.Errorf("%d requests to isolate one record", len(reqs))
	}
	dead, err := st.Read(store.DeadStream, 0, 0, 0)
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
			st := storetest.Open(t, t.TempDir())
			defer st.Close()
			rc := newReceiver(t, func(r *request) reply {
				if r.n == 0 {
					return reply{status: http.StatusServiceUnavailable, header: map[string]string{"Retry-After": tc.value()}}
				}
				return reply{status: http.StatusOK}
			})
			var logs logBuffer
			s := newSink(t, httpConfig(rc.url()), st, nil, logs.logger())
			appendN(t, st, "a", 0, 10)
			run(t, s)
			poll.Within(t, 10*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
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
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, nil)
	var logs logBuffer
	cfg := httpConfig(rc.url())
	cfg.Batch.MaxRecords = 100
	s := newSink(t, cfg, st, nil, logs.logger())
	run(t, s)
	appendN(t, st, "a", 0, 100)
	poll.Within(t, 5*time.Second, "first records acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })

	rc.stop() // the listener is gone: connections are refused
	appendN(t, st, "a", 100, 1000)
	poll.Within(t, 5*time.Second, "offline", func() bool { return s.Status().State == Offline })
	time.Sleep(200 * time.Millisecond) // many retries
	if st := s.Status(); st.PendingRecords != 1000 || st.Lag <= 0 || !strings.Contains(st.LastError, "refused") {
		t.Errorf("status during the outage: %+v", st)
	}
	rc.restart()
	poll.Within(t, 10*time.Second, "backlog acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
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
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, func(r *request) reply {
		if r.n < 3 {
			return reply{hangup: true}
		}
		return reply{status: http.StatusOK}
	})
	s := newSink(t, httpConfig(rc.url()), st, nil, nil)
	appendN(t, st, "a", 0, 20)
	run(t, s)
	poll.Within(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	checkOrder(t, rc.requests(), "a", 20)
	if st := s.Status(); st.Retried != 60 || st.Delivered != 20 {
		t.Errorf("status %+v", st)
	}
}

func TestHTTPSCustomCAAndClientCert(t *testing.T) {
	p := newPKI(t)
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	rc := newTLSReceiver(t, nil, p.serverTLS(t, true))

	// Without the CA the server is not trusted, and it stays so: offline.
	cfg := httpConfig(rc.url())
	cfg.Name = "untrusting"
	s := newSink(t, cfg, st, nil, nil)
	appendN(t, st, "a", 0, 10)
	stop := run(t, s)
	poll.Within(t, 5*time.Second, "offline", func() bool { return s.Status().State == Offline })
	if e := s.Status().LastError; !strings.Contains(e, "certificate") {
		t.Errorf("last error %q", e)
	}
	stop()

	cfg = httpConfig(rc.url())
	cfg.HTTP.CAFile, cfg.HTTP.CertFile, cfg.HTTP.KeyFile = p.CA, p.ClientCert, p.ClientKey
	s = newSink(t, cfg, st, nil, nil)
	run(t, s)
	poll.Within(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	checkOrder(t, rc.requests(), "a", 10)

	cfg.HTTP.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := New(cfg, st, nil, nil); err == nil {
		t.Error("New accepted a missing CA file")
	}
}

func TestHTTPGzip(t *testing.T) {
	signed := func(t *testing.T, r *request) {
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write(r.wire)
		if r.header.Get("X-Moongate-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("request %d: signature is not over the bytes on the wire", r.n)
		}
	}
	gzipped := func(reqs []*request) (n int) {
		for _, r := range reqs {
			if r.header.Get("Content-Encoding") == "gzip" {
				n++
			}
		}
		return n
	}
	// drain sends rounds x 50 records through a sink with mode, waiting for each round to
	// be acknowledged before the next, and returns the requests of each round.
	drain := func(t *testing.T, mode string, rounds int, respond func(*request) reply) [][]*request {
		st := storetest.Open(t, t.TempDir())
		defer st.Close()
		rc := newReceiver(t, respond)
		cfg := httpConfig(rc.url())
		cfg.HTTP.Gzip = mode
		cfg.Batch.MaxRecords = 10
		s := newSink(t, cfg, st, nil, nil)
		stop := run(t, s)
		var byRound [][]*request
		seen := 0
		for round := range rounds {
			appendN(t, st, "a", round*50, 50)
			poll.Within(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
			reqs := rc.requests()
			byRound = append(byRound, reqs[seen:])
			seen = len(reqs)
		}
		stop()
		reqs := rc.requests()
		checkOrder(t, reqs, "a", uint64(rounds*50))
		for _, r := range reqs {
			signed(t, r)
		}
		if d := s.Status().Dropped["dead_letter"]; d != 0 {
			t.Errorf("%d dead letters", d)
		}
		return byRound
	}
	t.Run("on", func(t *testing.T) {
		if reqs := drain(t, "on", 1, nil)[0]; gzipped(reqs) != len(reqs) {
			t.Errorf("%d of %d requests gzipped", gzipped(reqs), len(reqs))
		}
	})
	t.Run("off", func(t *testing.T) {
		accept := func(*request) reply {
			return reply{status: 200, header: map[string]string{"Accept-Encoding": "gzip"}}
		}
		if reqs := drain(t, "off", 1, accept)[0]; gzipped(reqs) != 0 {
			t.Errorf("%d requests gzipped", gzipped(reqs))
		}
	})
	t.Run("auto-plain-until-offered", func(t *testing.T) {
		reqs := drain(t, "auto", 1, nil)[0]
		if gzipped(reqs) != 0 {
			t.Errorf("%d requests gzipped to a receiver that never offered it", gzipped(reqs))
		}
	})
	t.Run("auto-offered", func(t *testing.T) {
		accept := func(*request) reply {
			return reply{status: 200, header: map[string]string{"Accept-Encoding": "gzip, br"}}
		}
		reqs := drain(t, "auto", 1, accept)[0]
		if reqs[0].header.Get("Content-Encoding") != "" || gzipped(reqs) != len(reqs)-1 {
			t.Errorf("%d of %d requests gzipped, want all but the first", gzipped(reqs), len(reqs))
		}
	})
	t.Run("auto-refused", func(t *testing.T) {
		// Offers gzip, then refuses it: the sink resends plainly and stays so.
		refuse := func(r *request) reply {
			if r.header.Get("Content-Encoding") == "gzip" {
				return reply{status: http.StatusUnsupportedMediaType}
			}
			return reply{status: 200, header: map[string]string{"Accept-Encoding": "gzip"}}
		}
		rounds := drain(t, "auto", 2, refuse)
		// The requests pipelined behind the first refused one were gzipped too.
		if n := gzipped(rounds[0]); n < 1 || n > 4 {
			t.Errorf("%d requests gzipped, want the window refused", n)
		}
		if n := gzipped(rounds[1]); n != 0 {
			t.Errorf("%d requests gzipped after the refusal", n)
		}
	})
}

func TestHTTPCommands(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, func(r *request) reply {
		if r.n == 0 {
			return reply{status: 200, body: `{"ok":true,"commands":[
				{"topic":"dev/1/set","payload":{"on":true}},
				{"topic":"dev/2/set","payload":"raw text","qos":0,"retain":true},
				{"topic":"dev/#","payload":1}]}`}
		}
		return reply{status: 200, body: "fine"}
	})
	var pub publisher
	cfg := httpConfig(rc.url())
	cfg.Batch.MaxRecords = 5
	s := newSink(t, cfg, st, &pub, nil)
	appendN(t, st, "a", 0, 20)
	run(t, s)
	poll.Within(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	got := pub.published()
	want := []string{`dev/1/set {"on":true} 1 false`, `dev/2/set raw text 0 true`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("published:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := s.Status().Commands; n != 2 {
		t.Errorf("Commands = %d", n)
	}
}

// A batch whose commands were applied before a crash, but whose cursor was
// not written, is resent: its commands must not be published again. And
// commands recorded but not marked applied are published at start.
func TestHTTPCommandsOncePerBatchAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	st := storetest.Open(t, dir)
	appendN(t, st, "a", 0, 4)
	recs, err := st.Read("a", 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	key := recs[0].ID + "-" + recs[3].ID
	rc := newReceiver(t, func(r *request) reply {
		return reply{status: 200, body: `{"commands":[{"topic":"dev/1/set","payload":"again"}]}`}
	})
	// The state a crash between marking the commands applied and writing
	// the cursor leaves behind.
	v, _ := json.Marshal(cmdState{Key: key, Done: true})
	if err := st.PutMeta("sink/cloud/commands/a", v); err != nil {
		t.Fatal(err)
	}
	var pub publisher
	s := newSink(t, httpConfig(rc.url()), st, &pub, nil)
	stop := run(t, s)
	poll.Within(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	stop()
	if reqs := rc.requests(); len(reqs) != 1 || reqs[0].header.Get("Idempotency-Key") != key {
		t.Fatalf("want one resend of %s", key)
	}
	if got := pub.published(); len(got) != 0 {
		t.Errorf("commands of an applied batch published again: %v", got)
	}

	// A crash after recording the commands, before marking them applied.
	v, _ = json.Marshal(cmdState{Key: "x-y", Commands: []command{{Topic: "dev/9/set", Payload: []byte("late"), QoS: 1}}})
	if err := st.PutMeta("sink/cloud/commands/a", v); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = storetest.Open(t, dir)
	defer st.Close()
	s = newSink(t, httpConfig(rc.url()), st, &pub, nil)
	run(t, s)
	poll.Within(t, 5*time.Second, "recorded commands published", func() bool { return len(pub.published()) == 1 })
	if got := pub.published()[0]; got != "dev/9/set late 1 false" {
		t.Errorf("published %q", got)
	}
}

func TestHTTPSlowReceiverTimesOut(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, func(r *request) reply {
		if r.n < 2 {
			return reply{status: http.StatusOK, delay: 500 * time.Millisecond}
		}
		return reply{status: http.StatusOK}
	})
	var logs logBuffer
	cfg := httpConfig(rc.url())
	cfg.HTTP.Timeout = 100 * time.Millisecond
	s := newSink(t, cfg, st, nil, logs.logger())
	appendN(t, st, "a", 0, 10)
	run(t, s)
	poll.Within(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	reqs := rc.requests()
	// The slow answers came too late: the same batch was sent three times.
	if len(reqs) != 3 || reqs[0].header.Get("Idempotency-Key") != reqs[2].header.Get("Idempotency-Key") {
		t.Errorf("%d requests", len(reqs))
	}
	if logs.count("to=offline") != 1 || !strings.Contains(logs.buf.String(), "timeout") {
		t.Errorf("logs:\n%s", logs.buf.String())
	}
}

// Auth and URL errors are the configuration's fault, not the records': they
// are retried, never dead-lettered.
func TestHTTPAuthErrorIsNotPoison(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, func(r *request) reply {
		if r.n < 4 {
			return reply{status: []int{401, 403, 404, 301}[r.n]}
		}
		return reply{status: http.StatusOK}
	})
	var logs logBuffer
	s := newSink(t, httpConfig(rc.url()), st, nil, logs.logger())
	appendN(t, st, "a", 0, 10)
	run(t, s)
	poll.Within(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	if dead, _ := st.Read(store.DeadStream, 0, 0, 0); len(dead) != 0 {
		t.Errorf("%d records dead-lettered", len(dead))
	}
	if len(rc.requests()) != 5 || logs.count("to=backing_off") != 1 {
		t.Errorf("%d requests; logs:\n%s", len(rc.requests()), logs.buf.String())
	}
}

// Servers that close the connection after every response, or close idle
// connections quickly, cost reconnects but are no failures.
func TestHTTPServerClosingConnections(t *testing.T) {
	for name, setup := range map[string]func(*receiver){
		"connection-close": func(rc *receiver) { rc.close = true },
		"idle-timeout":     func(rc *receiver) { rc.idle = 20 * time.Millisecond },
	} {
		t.Run(name, func(t *testing.T) {
			st := storetest.Open(t, t.TempDir())
			defer st.Close()
			rc := newReceiverWith(t, nil, setup)
			var logs logBuffer
			cfg := httpConfig(rc.url())
			cfg.Batch.MaxRecords = 10
			s := newSink(t, cfg, st, nil, logs.logger())
			run(t, s)
			for i := range 5 {
				appendN(t, st, "a", i*30, 30)
				poll.Within(t, 5*time.Second, "acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
				time.Sleep(50 * time.Millisecond)
			}
			checkOrder(t, rc.requests(), "a", 150)
			if n := len(rc.requests()); n != 15 {
				t.Errorf("%d requests for 15 batches", n)
			}
			if st := s.Status(); st.Retried != 0 || logs.count("sink state") != 0 {
				t.Errorf("retried %d; logs:\n%s", st.Retried, logs.buf.String())
			}
		})
	}
}

// An endpoint that answers with an endless header line costs the gateway at most the
// header budget: the request fails with a clear error and is retried, memory stays flat.
func TestHTTPEndlessResponseHeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Read(make([]byte, 64<<10))
				c.Write([]byte("HTTP/1.1 200 OK\r\nX-Endless: "))
				chunk := bytes.Repeat([]byte("a"), 32<<10)
				for range 1024 { // 32 MiB of one header line, unless the client hangs up
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
	}()
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	s := newSink(t, httpConfig("http://"+ln.Addr().String()+"/ingest"), st, nil, nil)
	appendN(t, st, "a", 0, 5)
	run(t, s)
	poll.Within(t, 10*time.Second, "the header refused", func() bool {
		return strings.Contains(s.Status().LastError, "response header larger than 64 KiB")
	})
	if p := pending(st, "cloud", "a"); p != 5 {
		t.Fatalf("%d pending: a refused answer acknowledged records", p)
	}
}
