package sink

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moongate/moongate/sync/store"
)

// openStore opens a real store in a temporary directory.
// newSink is New for a test: a configuration it refuses fails the test.
func newSink(t testing.TB, cfg Config, out Outbox, pub Publisher, logger *slog.Logger) *Sink {
	t.Helper()
	s, err := New(cfg, out, pub, logger)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// appendN appends n records to stream, in commits of up to 200, with data
// {"n": i} counting on from start.
func appendN(t testing.TB, st *store.Store, stream string, start, n int) {
	t.Helper()
	for i := 0; i < n; {
		k := min(200, n-i)
		recs := make([]store.Append, k)
		for j := range recs {
			recs[j] = store.Append{Stream: stream, Function: "fn", Data: fmt.Appendf(nil, `{"n":%d}`, start+i+j), TS: time.Now().UnixMilli()}
		}
		if _, err := st.Append(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
		i += k
	}
}

// wireBatch is a request body as SPEC §7 defines it.
type wireBatch struct {
	Gateway string    `json:"gateway"`
	Stream  string    `json:"stream"`
	Records []wireRec `json:"records"`
}

type wireRec struct {
	ID       string          `json:"id"`
	Seq      uint64          `json:"seq"`
	TS       int64           `json:"ts"`
	Function string          `json:"function"`
	Data     json.RawMessage `json:"data"`
}

// request is what the receiver saw of one request.
type request struct {
	n      int // arrival number
	at     time.Time
	conn   string // the client's address
	header http.Header
	wire   []byte // body as received
	batch  wireBatch
	status int // what the receiver answered; 0 if it broke the connection
}

// reply is what a receiver's respond hook wants done with a request.
type reply struct {
	status int
	header map[string]string
	body   string
	delay  time.Duration
	hangup bool // write half a response and close the connection
}

// receiver is a real HTTP server that records every request and answers as
// respond says (200 when nil).
type receiver struct {
	t       testing.TB
	srv     *http.Server
	ln      net.Listener
	addr    string
	mu      sync.Mutex
	reqs    []*request
	respond func(r *request) reply
	bytesIn int64 // bytes read from connections
	tls     *tls.Config
	idle    time.Duration // the server's IdleTimeout
	close   bool          // answer every request with Connection: close
	done    chan struct{}
}

func newReceiver(t testing.TB, respond func(*request) reply) *receiver {
	return newTLSReceiver(t, respond, nil)
}

// newReceiverWith starts a receiver after setup has adjusted it.
func newReceiverWith(t testing.TB, respond func(*request) reply, setup func(*receiver)) *receiver {
	t.Helper()
	rc := &receiver{t: t, respond: respond}
	setup(rc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc.addr = ln.Addr().String()
	rc.serve(ln)
	t.Cleanup(rc.stop)
	return rc
}

// newTLSReceiver serves HTTPS with cfg, or HTTP when cfg is nil.
func newTLSReceiver(t testing.TB, respond func(*request) reply, cfg *tls.Config) *receiver {
	t.Helper()
	rc := &receiver{t: t, respond: respond, tls: cfg}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc.addr = ln.Addr().String()
	rc.serve(ln)
	t.Cleanup(rc.stop)
	return rc
}

func (rc *receiver) url() string {
	if rc.tls != nil {
		return "https://" + rc.addr + "/ingest"
	}
	return "http://" + rc.addr + "/ingest"
}

func (rc *receiver) serve(ln net.Listener) {
	rc.ln = &countingListener{Listener: ln, n: &rc.bytesIn, mu: &rc.mu}
	if rc.tls != nil {
		rc.ln = tls.NewListener(rc.ln, rc.tls)
	}
	rc.srv = &http.Server{Handler: http.HandlerFunc(rc.handle), ErrorLog: log.New(io.Discard, "", 0), IdleTimeout: rc.idle}
	rc.done = make(chan struct{})
	go func(srv *http.Server, ln net.Listener, done chan struct{}) {
		defer close(done)
		srv.Serve(ln)
	}(rc.srv, rc.ln, rc.done)
}

// stop closes the listener and every connection: a real outage.
func (rc *receiver) stop() {
	if rc.srv == nil {
		return
	}
	rc.srv.Close()
	<-rc.done
	rc.srv = nil
}

// restart listens again on the same address.
func (rc *receiver) restart() {
	rc.t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", rc.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		rc.t.Fatal(err)
	}
	rc.serve(ln)
}

func (rc *receiver) handle(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	req := &request{header: r.Header.Clone(), wire: raw, at: time.Now(), conn: r.RemoteAddr}
	body := raw
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			body, err = io.ReadAll(zr)
		}
		if err != nil {
			http.Error(w, "bad gzip", http.StatusBadRequest)
			return
		}
	}
	if err := json.Unmarshal(body, &req.batch); err != nil {
		http.Error(w, "bad json: "+err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	req.n = len(rc.reqs)
	rc.reqs = append(rc.reqs, req)
	respond := rc.respond
	rc.mu.Unlock()
	rep := reply{status: http.StatusOK}
	if respond != nil {
		rep = respond(req)
	}
	if rep.delay > 0 {
		time.Sleep(rep.delay)
	}
	if rep.hangup {
		conn, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"comm")
		bw.Flush()
		conn.Close()
		return
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rc.close {
		w.Header().Set("Connection", "close")
	}
	rc.mu.Lock()
	req.status = rep.status
	rc.mu.Unlock()
	w.WriteHeader(rep.status)
	io.WriteString(w, rep.body)
}

func (rc *receiver) requests() []*request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]*request(nil), rc.reqs...)
}

// countingListener counts the bytes the server reads: the request bytes on
// the wire, headers included.
type countingListener struct {
	net.Listener
	n  *int64
	mu *sync.Mutex
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: l.n, mu: l.mu}, nil
}

type countingConn struct {
	net.Conn
	n  *int64
	mu *sync.Mutex
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	*c.n += int64(n)
	c.mu.Unlock()
	return n, err
}

// checkOrder checks what the receiver saw of one stream against the order
// contract: every request starts at most one past the highest seq any
// earlier request carried (a resend may go back, nothing may skip ahead),
// seqs inside a request are consecutive, and the accepted requests cover
// 1..want except the seqs in skip. It returns how many records were
// received in all.
func checkOrder(t testing.TB, reqs []*request, stream string, want uint64, skip ...uint64) int {
	t.Helper()
	var high uint64
	got := make(map[uint64]bool)
	total := 0
	ids := make(map[uint64]string)
	for _, r := range reqs {
		if r.batch.Stream != stream {
			continue
		}
		recs := r.batch.Records
		if len(recs) == 0 {
			t.Fatalf("request %d: empty batch", r.n)
		}
		if recs[0].Seq > high+1 {
			for _, r := range reqs[max(0, r.n-12) : r.n+1] {
				if len(r.batch.Records) > 0 {
					t.Logf("request %d from %s at %s: seqs %d-%d, answered %d", r.n, r.conn, r.at.Format("05.000000"), r.batch.Records[0].Seq, r.batch.Records[len(r.batch.Records)-1].Seq, r.status)
				}
			}
			t.Fatalf("request %d starts at seq %d, but the highest seq sent before was %d: a gap", r.n, recs[0].Seq, high)
		}
		for i, rec := range recs {
			if i > 0 && rec.Seq != recs[i-1].Seq+1 {
				t.Fatalf("request %d: seq %d follows %d", r.n, rec.Seq, recs[i-1].Seq)
			}
			if id, ok := ids[rec.Seq]; ok && id != rec.ID {
				t.Fatalf("seq %d resent with id %s, first sent as %s", rec.Seq, rec.ID, id)
			}
			ids[rec.Seq] = rec.ID
			high = max(high, rec.Seq)
			if r.status >= 200 && r.status < 300 {
				got[rec.Seq] = true
			}
		}
		total += len(recs)
		if k := r.header.Get("Idempotency-Key"); k != recs[0].ID+"-"+recs[len(recs)-1].ID {
			t.Fatalf("request %d: Idempotency-Key %q, want first-last ids", r.n, k)
		}
	}
	for _, s := range skip {
		if got[s] {
			t.Fatalf("seq %d of %s was acknowledged, want it skipped", s, stream)
		}
		got[s] = true
	}
	for s := uint64(1); s <= want; s++ {
		if !got[s] {
			t.Fatalf("seq %d of %s never acknowledged by the receiver (%d accepted)", s, stream, len(got))
		}
	}
	return total
}

// run starts s and returns a stop function that cancels it and waits.
func run(t testing.TB, s *Sink) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// pending is the records of stream after the consumer's cursor.
func pending(st *store.Store, consumer, stream string) int64 {
	return st.Stats().Consumers[consumer][stream].Pending
}

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), substr)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// publisher records published commands.
type publisher struct {
	mu   sync.Mutex
	msgs []string // "topic payload"
}

func (p *publisher) Publish(_ context.Context, topic string, payload []byte, qos byte, retain bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, fmt.Sprintf("%s %s %d %v", topic, payload, qos, retain))
	return nil
}

func (p *publisher) published() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.msgs...)
}

// fast are backoff settings for tests.
var fast = Backoff{Base: 5 * time.Millisecond, Cap: 50 * time.Millisecond}

func appendRec(stream, data string) store.Append {
	return store.Append{Stream: stream, Function: "fn", Data: []byte(data), TS: time.Now().UnixMilli()}
}

// crashable is the real store, until crash: from then on every call fails
// as if the process had died, so nothing more reaches the disk. (Closing the
// store under a running sink would do too, but Badger panics on reads after
// Close.)
type crashable struct {
	*store.Store
	crashed atomic.Bool
}

var errCrashed = errors.New("crashed")

func (c *crashable) Read(stream string, after uint64, n, b int) ([]store.Record, error) {
	if c.crashed.Load() {
		return nil, errCrashed
	}
	return c.Store.Read(stream, after, n, b)
}

func (c *crashable) Ack(consumer, stream string, seq uint64) error {
	if c.crashed.Load() {
		return errCrashed
	}
	return c.Store.Ack(consumer, stream, seq)
}

func (c *crashable) PutMeta(k string, v []byte) error {
	if c.crashed.Load() {
		return errCrashed
	}
	return c.Store.PutMeta(k, v)
}

func (c *crashable) Append(ctx context.Context, recs ...store.Append) ([]store.Record, error) {
	if c.crashed.Load() {
		return nil, errCrashed
	}
	return c.Store.Append(ctx, recs...)
}
