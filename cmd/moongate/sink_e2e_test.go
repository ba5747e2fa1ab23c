package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

// emitterLua turns one message {"m": M, "n": N} into N records over four streams, each
// naming where it came from, so the receiver can tell what it must get.
const emitterLua = `
function handle(event)
  local p = event.payload
  for i = 1, p.n do
    cloud.emit("s" .. (i % 4), {m = p.m, i = i})
  end
end
`

const (
	sinkStreams    = 4
	sinkMaxRecords = 200
	sinkWindow     = 4                      // sink.Config.Window's default for HTTP
	sinkAckEvery   = 200 * time.Millisecond // sink.DefaultAckInterval
	sinkPerMessage = 100                    // records per message
)

// TestSinkKill9 (issue 5 item 6): a backlog of records drains to a real HTTP receiver; the
// gateway is killed with SIGKILL in the middle of the drain, with requests in flight, and
// started again; later the receiver goes down (its listener closed) while new records keep
// coming, and comes back on the same port. Checked: every record arrived; per stream the
// first arrivals are in seq order without gaps; a record always has the same id and data;
// a batch sent again has the same Idempotency-Key and records; duplicates are bounded by
// what the sink may have delivered without writing its cursor.
func TestSinkKill9(t *testing.T) {
	rc := newReceiver(t)
	rc.hold = make(chan struct{}) // the receiver takes the first batches and answers none yet

	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	dir := t.TempDir()
	config := emitterConfig("sinktest", apiPort, mqttPort, fmt.Sprintf(`    - name: cloud
      http: {url: "http://%s/ingest", timeout: 5s}
      batch: {max_records: %d, linger: 20ms}
`, rc.addr, sinkMaxRecords))
	cfg := writeGatewayFiles(t, dir, config, map[string]string{"emitter.lua": emitterLua})
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()
	broker := fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)

	// A backlog of 20k records.
	const backlog = 200 * sinkPerMessage
	produce(t, broker, 0, 200)
	poll.Within(t, 20*time.Second, "the backlog committed", func() bool { return gw.metric("moongate_outbox_pending_records") >= backlog })

	// Drain; halfway the receiver stops answering and the gateway is killed.
	rc.delay = 40 * time.Millisecond // a few hundred ms of drain, so cursors get written
	atKill := rc.holdAt(backlog / 2)
	rc.release()
	waitHeld(t, rc, atKill)
	gw.kill9()
	killedAt := time.Now()
	rc.release()
	t.Logf("killed with %d records received", rc.distinctCount())
	gw.start()

	// At 85% the receiver goes down with requests in flight (connections cut, listener
	// closed) while new records keep coming, then comes back on the same port.
	waitHeld(t, rc, rc.holdAt(backlog*85/100))
	rc.stop()
	downAt := time.Now()
	received := rc.distinctCount()
	produce(t, broker, 200, 50)
	const total = backlog + 50*sinkPerMessage
	poll.Within(t, 10*time.Second, "the sink to notice the outage", func() bool { return syncStatus(t, gw).Sinks[0].State == "offline" })
	time.Sleep(time.Second)
	rc.start()
	t.Logf("receiver down for %v with %d records received", time.Since(downAt).Round(time.Millisecond), received)
	poll.Within(t, 30*time.Second, "every record delivered", func() bool {
		return rc.distinctCount() >= total && syncStatus(t, gw).Sinks[0].Pending == 0
	})
	gw.stop()

	// First arrivals in the 2 ack intervals before each fault may be sent again, and
	// so may every batch in flight.
	bound := rc.arrivedBetween(killedAt.Add(-2*sinkAckEvery), killedAt) + rc.arrivedBetween(downAt.Add(-2*sinkAckEvery), downAt) +
		2*sinkStreams*sinkWindow*sinkMaxRecords
	rc.check(t, 250, bound)
}

// emitterConfig is a gateway that runs emitterLua on gen/+ and drains to sinks, the
// entries of its sync.sinks.
func emitterConfig(id string, apiPort, mqttPort int, sinks string) string {
	return fmt.Sprintf(`gateway:
  id: %s
  data_dir: ./data
  console: {listen: 127.0.0.1:%d}
mqtt:
  broker: embedded
  embedded: {listen: 127.0.0.1:%d}
functions:
  - name: emitter
    source: emitter.lua
    triggers: ["mqtt:gen/+@1"]
    timeout: 1s
sync:
  sinks:
`, id, apiPort, mqttPort) + sinks
}

func waitHeld(t *testing.T, rc *receiver, held <-chan struct{}) {
	t.Helper()
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatalf("drain stalled at %d records", rc.distinctCount())
	}
}

// produce publishes count messages from m0 on; each makes sinkPerMessage records.
func produce(t *testing.T, broker string, m0, count int) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("gen-%d", m0)))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", broker, tok.Error())
	}
	defer c.Disconnect(100)
	var toks []paho.Token
	for m := m0; m < m0+count; m++ {
		toks = append(toks, c.Publish(fmt.Sprintf("gen/%d", m%8), 1, false, fmt.Sprintf(`{"m": %d, "n": %d}`, m, sinkPerMessage)))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
}

type syncDoc struct {
	Sinks []struct {
		Name    string `json:"name"`
		State   string `json:"state"`
		Pending int64  `json:"pending"`
	} `json:"sinks"`
}

func syncStatus(t *testing.T, gw *gatewayProc) syncDoc {
	t.Helper()
	resp, err := http.Get(gw.api() + "/api/v1/sync")
	if err != nil {
		t.Fatalf("GET /api/v1/sync: %v", err)
	}
	defer resp.Body.Close()
	var d syncDoc
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || len(d.Sinks) != 1 {
		t.Fatalf("GET /api/v1/sync: %v (%d sinks)", err, len(d.Sinks))
	}
	return d
}

// receiver is a cloud function's HTTP endpoint: it records every batch as it arrives.
type receiver struct {
	t    *testing.T
	addr string
	h    http.Handler

	srvMu sync.Mutex
	srv   *httptest.Server

	mu      sync.Mutex
	batches []rxBatch
	first   map[string]time.Time // record id -> first arrival
	hold    chan struct{}        // non-nil: requests wait for it before they are answered
	holdN   int                  // distinct records at which hold starts; 0: never
	held    chan struct{}        // closed when hold started at holdN
	delay   time.Duration        // before answering
}

type rxRecord struct {
	ID   string          `json:"id"`
	Seq  uint64          `json:"seq"`
	Data json.RawMessage `json:"data"`
}

type rxBatch struct {
	at      time.Time
	key     string
	stream  string
	records []rxRecord
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{t: t, first: map[string]time.Time{}}
	rc.h = http.HandlerFunc(rc.serve)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc.addr = l.Addr().String()
	rc.startOn(l)
	t.Cleanup(rc.stop)
	return rc
}

func (rc *receiver) startOn(l net.Listener) {
	rc.srvMu.Lock()
	defer rc.srvMu.Unlock()
	rc.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: rc.h}}
	rc.srv.Start()
}

// start brings the receiver back on its address.
func (rc *receiver) start() {
	l, err := net.Listen("tcp", rc.addr)
	if err != nil {
		rc.t.Fatalf("listen again on %s: %v", rc.addr, err)
	}
	rc.startOn(l)
}

// stop is an outage, not an error response: every connection is cut, requests in flight
// get no answer, and the listener is closed.
func (rc *receiver) stop() {
	rc.srvMu.Lock()
	defer rc.srvMu.Unlock()
	if rc.srv != nil {
		rc.srv.CloseClientConnections()
		rc.release() // held requests now answer into closed connections
		rc.srv.Close()
		rc.srv = nil
	}
}

// holdAt makes the receiver stop answering once n distinct records arrived.
func (rc *receiver) holdAt(n int) <-chan struct{} {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.holdN, rc.held = n, make(chan struct{})
	return rc.held
}

// release answers the held requests and those that follow.
func (rc *receiver) release() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.hold != nil {
		close(rc.hold)
		rc.hold = nil
	}
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return // the connection broke (an outage): no answer
	}
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			raw, err = io.ReadAll(gz)
		}
		if err != nil {
			rc.t.Errorf("gzipped body: %v", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	var b struct {
		Gateway string     `json:"gateway"`
		Stream  string     `json:"stream"`
		Records []rxRecord `json:"records"`
	}
	if err := json.Unmarshal(raw, &b); err != nil || len(b.Records) == 0 || b.Gateway != "sinktest" {
		rc.t.Errorf("batch: %v (%d records, gateway %q): %.200s", err, len(b.Records), b.Gateway, raw)
		http.Error(w, "bad batch", http.StatusInternalServerError)
		return
	}
	now := time.Now()
	rc.mu.Lock()
	rc.batches = append(rc.batches, rxBatch{at: now, key: r.Header.Get("Idempotency-Key"), stream: b.Stream, records: b.Records})
	for _, rec := range b.Records {
		if _, ok := rc.first[rec.ID]; !ok {
			rc.first[rec.ID] = now
		}
	}
	if rc.holdN > 0 && len(rc.first) >= rc.holdN {
		rc.holdN = 0
		rc.hold = make(chan struct{})
		close(rc.held)
	}
	hold, delay := rc.hold, rc.delay
	rc.mu.Unlock()
	if hold != nil {
		<-hold
	}
	time.Sleep(delay)
	w.Header().Set("Accept-Encoding", "gzip") // the sink gzips from now on
	w.WriteHeader(http.StatusOK)
}

func (rc *receiver) distinctCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.first)
}

// arrivedBetween counts the records that first arrived in [from, to].
func (rc *receiver) arrivedBetween(from, to time.Time) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, at := range rc.first {
		if !at.Before(from) && !at.After(to) {
			n++
		}
	}
	return n
}

// check verifies what arrived: messages 0..msgs-1, sinkPerMessage records each.
func (rc *receiver) check(t *testing.T, msgs, dupBound int) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	type rec struct {
		id     string
		stream string
		data   string
	}
	bySeq := map[string]map[uint64]rec{} // stream -> seq -> the record first seen
	maxSeq := map[string]uint64{}
	keys := map[string][]string{} // Idempotency-Key -> record ids
	byID := map[string]rec{}
	got := map[string]bool{} // "m-i"
	records, dups, resentBatches := 0, 0, 0
	for _, b := range rc.batches {
		ids := make([]string, len(b.records))
		for i, r := range b.records {
			ids[i] = r.ID
		}
		if want := ids[0] + "-" + ids[len(ids)-1]; b.key != want {
			t.Errorf("batch of %s with Idempotency-Key %q, want %q", b.stream, b.key, want)
		}
		prev, resent := keys[b.key]
		if resent {
			resentBatches++
			if !slices.Equal(prev, ids) {
				t.Errorf("Idempotency-Key %s sent again with other records", b.key)
			}
		}
		keys[b.key] = ids
		if bySeq[b.stream] == nil {
			bySeq[b.stream] = map[uint64]rec{}
		}
		for _, r := range b.records {
			records++
			cur := rec{id: r.ID, stream: b.stream, data: string(r.Data)}
			if old, ok := byID[r.ID]; ok && old != cur {
				t.Errorf("record id %s arrived as %v and as %v", r.ID, old, cur)
			}
			byID[r.ID] = cur
			if r.Seq <= maxSeq[b.stream] { // a duplicate: the same record as before
				dups++
				if old := bySeq[b.stream][r.Seq]; old != cur {
					t.Errorf("%s seq %d arrived as %v, then as %v", b.stream, r.Seq, old, cur)
				}
				if !resent {
					t.Errorf("%s seq %d arrived again in a batch never sent before (key %s)", b.stream, r.Seq, b.key)
				}
				continue
			}
			if r.Seq != maxSeq[b.stream]+1 {
				t.Errorf("%s: seq %d arrived first after seq %d", b.stream, r.Seq, maxSeq[b.stream])
			}
			maxSeq[b.stream] = r.Seq
			bySeq[b.stream][r.Seq] = cur
			var d struct{ M, I int }
			if err := json.Unmarshal(r.Data, &d); err != nil {
				t.Errorf("record data %s: %v", r.Data, err)
			}
			got[fmt.Sprintf("%d-%d", d.M, d.I)] = true
		}
	}
	missing := 0
	for m := range msgs {
		for i := 1; i <= sinkPerMessage; i++ {
			if !got[fmt.Sprintf("%d-%d", m, i)] {
				if missing++; missing <= 5 {
					t.Errorf("record m=%d i=%d never arrived", m, i)
				}
			}
		}
	}
	if missing > 0 || len(byID) != msgs*sinkPerMessage {
		t.Errorf("%d records missing, %d distinct ids for %d records", missing, len(byID), msgs*sinkPerMessage)
	}
	t.Logf("%d requests, %d records received for %d: %d duplicates (bound %d), %d batches resent with the same key",
		len(rc.batches), records, len(byID), dups, dupBound, resentBatches)
	if dups > dupBound {
		t.Errorf("%d duplicates, more than the bound %d", dups, dupBound)
	}
}
