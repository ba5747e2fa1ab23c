package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/sync/store"
)

// maxResends bounds resends in a row that are nobody's fault (a server
// closing its connection, a stale idle connection) before they count as a
// failure and back off.
const maxResends = 3

// A lane drains one stream for one sink: it cuts batches from the cursor,
// keeps up to a window of them in flight on one pipe, moves the cursor over
// the acknowledged prefix, and goes back to the first unacknowledged batch
// when one fails (see the package doc). All its fields belong to its
// goroutine except the atomics Status reads.
type lane struct {
	s      *Sink
	stream string
	enc    bodyEncoder // HTTP only
	log    *slog.Logger

	acked    uint64 // last seq acknowledged (or dead-lettered or dropped)
	durable  uint64 // last seq written to the store's cursor
	lastAck  time.Time
	sent     uint64   // last seq handed to the pipe
	inflight []*batch // sent, in order, not yet answered
	isolate  []*batch // a rejected batch's pieces, next one on top
	spans    []span   // persisted bounds of short batches, for keyed transports
	p        pipe

	lingerSeq   uint64 // first seq of the short batch waiting for more
	lingerSince time.Time

	failures int // failed attempts in a row, for backoff
	resends  int // faultless resends in a row
	cmd      cmdState

	cursor    atomic.Uint64 // acked, for Status
	inRecords atomic.Int64  // records in flight, for Status
	state     State         // owned by Sink.mu
}

// span is the seq range of a batch that was cut short by linger.
type span struct{ First, Last uint64 }

func newLane(s *Sink, stream string) *lane {
	l := &lane{s: s, stream: stream, log: s.log.With(logKeyStream, stream), state: Online}
	if s.tr.keyed() {
		l.enc = s.cfg.HTTP.encoder(s.cfg.GatewayID, stream)
	}
	return l
}

func (l *lane) run(ctx context.Context) {
	defer l.stop()
	for {
		err := l.start(ctx)
		if err == nil {
			break
		}
		if !l.sleep(ctx, l.localError(err)) {
			return
		}
	}
	for ctx.Err() == nil {
		changed := l.s.out.Changed()
		wait, err := l.fill(ctx)
		if err != nil {
			if !l.sleep(ctx, l.localError(err)) {
				return
			}
			continue
		}
		var head <-chan result
		if len(l.inflight) > 0 {
			head = l.inflight[0].done
		}
		// A short batch waiting for linger is looked at a few times during
		// its linger, not at every append: re-reading it on each of
		// thousands of appends a second would cost more than sending it.
		var more <-chan struct{}
		if wait > 0 {
			wait = min(wait, max(l.s.cfg.Batch.Linger/4, time.Millisecond))
		} else if len(l.inflight) < l.window() && len(l.isolate) == 0 {
			more = changed
		}
		select {
		case <-ctx.Done():
		case r := <-head:
			l.handle(ctx, r)
		case <-more:
		case <-l.s.cfg.Clock.After(l.nextWake(wait)):
			l.flushAck()
		}
	}
}

// nextWake is when the loop wakes without news: at the end of linger, when
// a pending cursor write is due, or in a while.
func (l *lane) nextWake(wait time.Duration) time.Duration {
	d := time.Minute
	if wait > 0 {
		d = wait
	}
	if l.acked > l.durable {
		d = min(d, max(l.s.cfg.AckInterval-l.s.cfg.Clock.Now().Sub(l.lastAck), time.Millisecond))
	}
	return d
}

// start loads the lane's durable state: cursor, short-batch spans, and the
// commands left unpublished by a stop.
func (l *lane) start(ctx context.Context) error {
	c, err := l.s.out.Cursor(l.s.cfg.Name, l.stream)
	if err != nil {
		return fmt.Errorf("cursor: %w", err)
	}
	l.acked, l.durable, l.sent = c, c, c
	l.cursor.Store(c)
	if l.s.tr.keyed() {
		v, ok, err := l.s.out.GetMeta(l.spanKey())
		if err != nil {
			return fmt.Errorf("batch spans: %w", err)
		}
		if ok {
			if err := json.Unmarshal(v, &l.spans); err != nil {
				l.log.Warn("ignoring unreadable batch spans", logKeyErr, err)
				l.spans = nil
			}
		}
	}
	return l.loadCommands(ctx)
}

func (l *lane) stop() {
	l.reset()
	l.flushAck()
}

func (l *lane) spanKey() string { return "sink/" + l.s.cfg.Name + "/spans/" + l.stream }

// window is how many batches may be in flight now.
func (l *lane) window() int {
	if l.p == nil {
		return 1
	}
	if !l.p.alive() {
		if len(l.inflight) > 0 {
			return 0 // the outstanding batches fail first; then a new pipe
		}
		return 1
	}
	return min(l.s.cfg.Window, l.p.window())
}

// fill sends batches until the window is full or the stream is drained. It
// returns how long a short batch still lingers.
func (l *lane) fill(ctx context.Context) (time.Duration, error) {
	if len(l.isolate) > 0 {
		// Isolating a rejected record: one piece at a time, so each answer
		// is about that piece alone.
		if len(l.inflight) > 0 {
			return 0, nil
		}
		for {
			err := l.ensurePipe(ctx)
			if err == nil {
				break
			}
			l.failed(ctx, result{outcome: unreachable, err: err})
			if ctx.Err() != nil {
				return 0, nil
			}
		}
		l.send(ctx, l.isolate[len(l.isolate)-1])
		return 0, nil
	}
	for len(l.inflight) < l.window() && ctx.Err() == nil {
		b, wait, err := l.cut()
		if err != nil || b == nil {
			return wait, err
		}
		if err := l.ensurePipe(ctx); err != nil {
			// Nothing was sent: cut again after the backoff.
			l.failed(ctx, result{outcome: unreachable, err: err})
			continue
		}
		l.send(ctx, b)
	}
	return 0, nil
}

func (l *lane) ensurePipe(ctx context.Context) error {
	// A pipe that died under batches in flight is kept until their failure
	// has been handled: a new connection now would let the next batch
	// overtake them. Sent on the dead pipe, it just fails after them.
	if l.p != nil && (l.p.alive() || len(l.inflight) > 0) {
		return nil
	}
	if l.p != nil {
		l.p.close()
		l.p = nil
	}
	p, err := l.s.tr.open(ctx, l.stream)
	if err != nil {
		return err
	}
	l.p = p
	return nil
}

func (l *lane) send(ctx context.Context, b *batch) {
	l.inflight = append(l.inflight, b)
	l.inRecords.Add(int64(len(b.recs)))
	if b.last() > l.sent {
		l.sent = b.last()
	}
	l.p.send(ctx, b)
}

// cut reads the next batch after l.sent. A batch that is not full waits
// until its first record is Linger old, unless its bounds were persisted by
// an earlier run (it was sent before, and must be sent the same).
func (l *lane) cut() (*batch, time.Duration, error) {
	cfg := l.s.cfg.Batch
	after := l.sent
	if sp, ok := l.spanAt(after); ok {
		recs, err := l.s.out.Read(l.stream, after, cfg.MaxRecords, math.MaxInt32)
		if err != nil {
			return nil, 0, fmt.Errorf("read %s: %w", l.stream, err)
		}
		n := 0
		for n < len(recs) && recs[n].Seq <= sp.Last {
			n++
		}
		if n > 0 {
			return newBatch(recs[:n], l.body(recs[:n])), 0, nil
		}
		// Every record of the span is gone (dropped by the outbox): cut anew.
	}
	recs, err := l.s.out.Read(l.stream, after, cfg.MaxRecords, cfg.MaxBytes)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", l.stream, err)
	}
	if len(recs) == 0 {
		return nil, 0, nil
	}
	var body []byte
	n := len(recs)
	if l.enc != nil {
		body, n = l.enc.pack(recs, cfg.MaxBytes)
	}
	full := n < len(recs) || n == cfg.MaxRecords
	if !full && (cfg.Linger > 0 || l.s.tr.keyed()) {
		// Read may have stopped at its byte bound: a next record means
		// the batch is as full as it gets.
		more, err := l.s.out.Read(l.stream, recs[n-1].Seq, 1, math.MaxInt32)
		if err != nil {
			return nil, 0, fmt.Errorf("read %s: %w", l.stream, err)
		}
		full = len(more) > 0
	}
	if !full && cfg.Linger > 0 {
		now := l.s.cfg.Clock.Now()
		if l.lingerSeq != recs[0].Seq {
			l.lingerSeq, l.lingerSince = recs[0].Seq, now
		}
		// An old record (a backlog's tail) has waited long enough already.
		age := max(now.Sub(l.lingerSince), now.Sub(time.UnixMilli(recs[0].TS)))
		if age < cfg.Linger {
			return nil, cfg.Linger - age, nil
		}
	}
	b := newBatch(recs[:n], body)
	if !full && l.s.tr.keyed() {
		if err := l.persistSpan(b); err != nil {
			return nil, 0, err
		}
	}
	return b, 0, nil
}

func (l *lane) body(recs []store.Record) []byte {
	if l.enc == nil {
		return nil
	}
	return l.enc.body(recs)
}

// spanAt finds a persisted span that starts right after seq.
func (l *lane) spanAt(seq uint64) (span, bool) {
	for _, sp := range l.spans {
		if sp.First == seq+1 {
			return sp, true
		}
	}
	return span{}, false
}

// persistSpan writes the bounds of a short batch before it is first sent,
// so that after a crash it is cut the same and keeps its Idempotency-Key.
func (l *lane) persistSpan(b *batch) error {
	kept := l.spans[:0]
	for _, sp := range l.spans {
		if sp.Last > l.acked {
			kept = append(kept, sp)
		}
	}
	l.spans = append(kept, span{b.first(), b.last()})
	v, err := json.Marshal(l.spans)
	if err != nil {
		return fmt.Errorf("encode spans: %w", err)
	}
	if err := l.s.out.PutMeta(l.spanKey(), v); err != nil {
		return fmt.Errorf("record batch span: %w", err)
	}
	return nil
}

// handle acts on the answer for the oldest batch in flight.
func (l *lane) handle(ctx context.Context, r result) {
	b := l.inflight[0]
	switch r.outcome {
	case delivered:
		l.inflight = l.inflight[1:]
		l.inRecords.Add(-int64(len(b.recs)))
		if n := len(l.isolate); n > 0 && l.isolate[n-1] == b {
			l.isolate = l.isolate[:n-1]
		}
		l.failures, l.resends = 0, 0
		l.s.succeeded(l)
		if r.err != nil {
			l.log.Warn("delivered; response not understood", "batch", b.key(), logKeyErr, r.err)
		}
		if len(r.commands) > 0 {
			if err := l.applyCommands(ctx, b, r.commands); err != nil {
				l.log.Error("commands", "batch", b.key(), logKeyErr, err)
			}
			l.advance(b.last(), len(b.recs), 0)
			l.flushAck()
		} else {
			l.advance(b.last(), len(b.recs), 0)
			if len(l.inflight) == 0 || l.s.cfg.Clock.Now().Sub(l.lastAck) >= l.s.cfg.AckInterval {
				l.flushAck()
			}
		}
	case resend:
		l.resends++
		if l.resends > maxResends {
			l.failed(ctx, result{outcome: unreachable, err: r.err})
			return
		}
		l.reset()
	case rejected:
		l.reset()
		if n := len(l.isolate); n > 0 && l.isolate[n-1] == b {
			l.isolate = l.isolate[:n-1]
		} else {
			l.sent = b.last() // the pieces of b cover up to here
		}
		if len(b.recs) > 1 {
			left, right := b.split(l.enc)
			l.isolate = append(l.isolate, right, left)
			l.log.Debug("batch rejected, splitting", "batch", b.key(), logKeyErr, r.err)
			return
		}
		if err := l.deadLetter(ctx, b.recs[0], r.err); err != nil {
			l.isolate = append(l.isolate, b) // try it again later
			l.sleep(ctx, l.localError(err))
			return
		}
		l.advance(b.last(), 0, 1)
		l.s.succeeded(l) // the receiver answered; it is up
	default:
		l.failed(ctx, r)
	}
}

// failed handles an attempt that did not deliver: it resets the pipeline,
// reports the state, and sleeps the backoff (or the Retry-After).
func (l *lane) failed(ctx context.Context, r result) {
	if n := l.inRecords.Load(); n > 0 {
		l.s.retried.Add(uint64(n))
	}
	l.reset()
	st := Offline
	if r.outcome == retry {
		st = BackingOff
	}
	l.s.failedWith(l, st, r.err)
	d := r.retryAfter
	if d == 0 {
		d = l.s.cfg.Backoff.delay(l.failures)
	}
	l.failures++
	l.sleep(ctx, d)
}

// reset abandons every batch in flight and the pipe; the lane resends from
// the cursor (go-back-N), or from the top of the isolation stack.
func (l *lane) reset() {
	if l.p != nil {
		l.p.close()
		l.p = nil
	}
	l.inflight = nil
	l.inRecords.Store(0)
	if len(l.isolate) == 0 {
		l.sent = l.acked
	}
}

// advance moves the in-memory cursor to seq over a batch of n delivered and
// dead dead-lettered records; seqs in between that were not read were
// dropped by the outbox before this sink got them.
func (l *lane) advance(seq uint64, n, dead int) {
	if gap := int64(seq-l.acked) - int64(n+dead); gap > 0 {
		l.s.drop(dropEvicted, uint64(gap))
	}
	l.s.delivered.Add(uint64(n))
	if dead > 0 {
		l.s.drop(dropDeadLetter, uint64(dead))
	}
	l.acked = seq
	l.cursor.Store(seq)
}

// flushAck writes the cursor to the store, which lets it trim the outbox.
func (l *lane) flushAck() {
	if l.acked <= l.durable {
		return
	}
	if err := l.s.out.Ack(l.s.cfg.Name, l.stream, l.acked); err != nil {
		l.log.Error("write cursor", logKeyErr, err)
		return
	}
	l.durable = l.acked
	l.lastAck = l.s.cfg.Clock.Now()
}

// deadLetter appends a record the receiver rejected to the $dead stream,
// with the reason. Records of a "$" stream (a sink may take $dead itself) are
// not dead-lettered again: that would loop.
func (l *lane) deadLetter(ctx context.Context, rec store.Record, reason error) error {
	l.log.Warn("record rejected", "id", rec.ID, "seq", rec.Seq, logKeyErr, reason)
	if strings.HasPrefix(l.stream, "$") {
		return nil
	}
	data, err := json.Marshal(deadRecord{
		Sink: l.s.cfg.Name, Stream: rec.Stream, ID: rec.ID, Seq: rec.Seq, TS: rec.TS,
		Error: reason.Error(), Data: rawOrNull(rec.Data),
	})
	if err != nil {
		return fmt.Errorf("encode dead letter: %w", err)
	}
	if _, err := l.s.out.Append(ctx, store.Append{Stream: store.DeadStream, Function: rec.Function, Data: data, TS: l.s.cfg.Clock.Now().UnixMilli()}); err != nil {
		return fmt.Errorf("dead letter %s: %w", rec.ID, err)
	}
	return nil
}

// deadRecord is the data of a $dead record written by a sink.
type deadRecord struct {
	Sink   string          `json:"sink"`
	Stream string          `json:"stream"`
	ID     string          `json:"id"`
	Seq    uint64          `json:"seq"`
	TS     int64           `json:"ts"`
	Error  string          `json:"error"`
	Data   json.RawMessage `json:"data"`
}

func rawOrNull(d json.RawMessage) json.RawMessage {
	if len(d) == 0 || !json.Valid(d) {
		b, _ := json.Marshal(string(d)) // a string always marshals
		if len(d) == 0 {
			return json.RawMessage("null")
		}
		return b
	}
	return d
}

// localError reports a failure of the gateway itself (the store), not of
// the receiver, and returns how long to wait before trying again.
func (l *lane) localError(err error) time.Duration {
	l.log.Error(logkey.Sink, logKeyErr, err)
	l.s.noteError(err)
	d := l.s.cfg.Backoff.delay(l.failures)
	l.failures++
	return d
}

// sleep waits d or until ctx ends; it reports whether to go on.
func (l *lane) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-l.s.cfg.Clock.After(d):
		return true
	}
}
