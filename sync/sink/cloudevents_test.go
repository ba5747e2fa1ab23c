package sink

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store/storetest"
)

// ceReceiver is a real HTTP server that reads every request with the
// CloudEvents SDK, validates each event against the spec's required
// attributes, and keeps the events by id, as a receiver that dedupes does.
type ceReceiver struct {
	t   testing.TB
	srv *httptest.Server
	// fail says whether to answer a request 500 after storing its events:
	// a receiver that processed a batch and then failed, so it is resent.
	fail func(n int) bool

	mu        sync.Mutex
	requests  int
	encodings map[binding.Encoding]int
	byID      map[string]event.Event
	order     map[string][]string // subject -> ids, first arrival order
	arrivals  int
	bad       []string
}

func newCEReceiver(t testing.TB, fail func(n int) bool) *ceReceiver {
	rc := &ceReceiver{t: t, fail: fail, encodings: map[binding.Encoding]int{}, byID: map[string]event.Event{}, order: map[string][]string{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.handle))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *ceReceiver) handle(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, "bad gzip", http.StatusBadRequest)
			return
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			http.Error(w, "bad gzip", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(raw))
		r.Header.Del("Content-Encoding")
		r.ContentLength = int64(len(raw))
	}
	msg := cehttp.NewMessageFromHttpRequest(r)
	enc := msg.ReadEncoding()
	var events []event.Event
	var err error
	if enc == binding.EncodingBatch {
		events, err = cehttp.NewEventsFromHTTPRequest(r)
	} else {
		var e *event.Event
		e, err = binding.ToEvent(r.Context(), msg)
		if e != nil {
			events = []event.Event{*e}
		}
	}
	if err == nil && len(events) == 0 {
		err = errNoEvents
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := rc.requests
	rc.requests++
	rc.encodings[enc]++
	if err != nil {
		rc.bad = append(rc.bad, err.Error())
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, e := range events {
		if err := e.Validate(); err != nil {
			rc.bad = append(rc.bad, err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	for _, e := range events {
		rc.arrivals++
		if _, dup := rc.byID[e.ID()]; dup {
			continue
		}
		rc.byID[e.ID()] = e
		rc.order[e.Subject()] = append(rc.order[e.Subject()], e.ID())
	}
	if rc.fail != nil && rc.fail(n) {
		http.Error(w, "stored, then failed", http.StatusInternalServerError)
	}
}

var errNoEvents = errors.New("no events in the request")

func TestCloudEventsModes(t *testing.T) {
	for _, tc := range []struct {
		mode string
		gzip string
		want binding.Encoding
	}{
		{CEBatched, "on", binding.EncodingBatch},
		{CEStructured, "off", binding.EncodingStructured},
		{CEBinary, "off", binding.EncodingBinary},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			st := storetest.Open(t, t.TempDir())
			defer st.Close()
			// Every third request is processed and then answered 500: the
			// sink resends it and the receiver dedupes by id.
			rc := newCEReceiver(t, func(n int) bool { return n%3 == 1 })
			cfg := httpConfig(rc.srv.URL + "/events")
			cfg.HTTP.Gzip = tc.gzip
			cfg.HTTP.Format = FormatCloudEvents
			cfg.HTTP.CloudEvents = CloudEventsConfig{Mode: tc.mode, Types: map[string]string{"alerts": "com.example.alert"}}
			cfg.Batch.MaxRecords = 7
			s := newSink(t, cfg, st, nil, nil)
			appendN(t, st, "alerts", 0, 20)
			appendN(t, st, "telemetry", 100, 30)
			want := map[string]map[string]any{} // id -> what its event must say
			for _, stream := range []string{"alerts", "telemetry"} {
				recs, err := st.Read(stream, 0, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				typ := DefaultCEType
				if stream == "alerts" {
					typ = "com.example.alert"
				}
				for _, r := range recs {
					want[r.ID] = map[string]any{"subject": stream, "type": typ, "time": time.UnixMilli(r.TS).UTC(), "data": string(r.Data)}
				}
			}
			run(t, s)
			poll.Within(t, 10*time.Second, "every record acknowledged", func() bool {
				return pending(st, "cloud", "alerts") == 0 && pending(st, "cloud", "telemetry") == 0
			})
			rc.mu.Lock()
			defer rc.mu.Unlock()
			if len(rc.bad) > 0 {
				t.Fatalf("the SDK refused requests: %v", rc.bad)
			}
			if len(rc.encodings) != 1 || rc.encodings[tc.want] == 0 {
				t.Errorf("encodings %v, want only %v", rc.encodings, tc.want)
			}
			if rc.arrivals <= len(want) {
				t.Errorf("%d events arrived for %d records: no redelivery was tested", rc.arrivals, len(want))
			}
			if len(rc.byID) != len(want) {
				t.Fatalf("%d distinct ids, want %d", len(rc.byID), len(want))
			}
			for id, w := range want {
				e, ok := rc.byID[id]
				if !ok {
					t.Fatalf("no event with the record id %s", id)
				}
				if e.SpecVersion() != "1.0" || e.Source() != "moongate://pi-kitchen/fn" || e.Type() != w["type"] ||
					e.Subject() != w["subject"] || !e.Time().Equal(w["time"].(time.Time)) ||
					e.DataContentType() != "application/json" || string(e.Data()) != w["data"] {
					t.Errorf("event %s: %s, want %v", id, e, w)
				}
			}
			if tc.mode != CEBatched && rc.requests < len(want) {
				t.Errorf("%d requests for %d events in %s mode", rc.requests, len(want), tc.mode)
			}
			// Per stream, first arrivals are in the stream's order.
			for subject, ids := range rc.order {
				last := -1
				for _, id := range ids {
					var d struct{ N int }
					if err := json.Unmarshal(rc.byID[id].Data(), &d); err != nil || d.N <= last {
						t.Fatalf("%s: record %s (n=%d) arrived after n=%d", subject, id, d.N, last)
					}
					last = d.N
				}
			}
		})
	}
}

func TestCloudEventsHeaderValue(t *testing.T) {
	for in, want := range map[string]string{
		"moongate://gw/fn": "moongate://gw/fn",
		"a b":              "a%20b",
		`q"%`:              "q%22%25",
		"é":                "%C3%A9",
		" x":               "%20x",
	} {
		if got := ceHeaderValue(in); got != want {
			t.Errorf("ceHeaderValue(%q) = %q, want %q", in, got, want)
		}
	}
}
