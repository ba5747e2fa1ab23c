package sink

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moongate/moongate/internal/redact"
	"github.com/moongate/moongate/sync/store"
)

// JetStreamConfig is a NATS JetStream stream the sink publishes every record
// to. The stream itself (its subjects, replicas and duplicate window) is
// created on the NATS side.
type JetStreamConfig struct {
	// URL is the server, or a comma-separated list of a cluster's servers:
	// nats:// or tls://.
	URL string
	// Subject is the subject template; {gateway}, {stream} and {function}
	// are replaced (with '.', '*', '>' and spaces in the values replaced by
	// '_'). Default DefaultJetStreamSubject.
	Subject string
	TLS     TLSFiles
	// Creds is a NATS credentials file (user JWT and NKey seed); it must not
	// be readable by group or others.
	Creds string
	// Window is the number of publishes awaiting their PubAck on the
	// connection. Default 1024.
	Window int
	// Timeout bounds connecting and each PubAck. Default 10s.
	Timeout time.Duration
}

// JetStream defaults.
const (
	DefaultJetStreamSubject = "moongate.{gateway}.{stream}"
	DefaultJetStreamWindow  = 1024
	DefaultJetStreamTimeout = 10 * time.Second
)

var errPubAckLate = errors.New("jetstream: no PubAck in time")

// jsTransport publishes records to JetStream on one NATS connection, shared
// by the lanes. nats.go reconnects by itself (to any server of the cluster);
// every disconnect ends an epoch, and the pipes of that epoch fail, so the
// lanes resend from their cursors on the next one.
type jsTransport struct {
	s    *Sink
	cfg  *JetStreamConfig
	opts []nats.Option
	sem  chan struct{} // one slot per publish awaiting its PubAck

	mu    sync.Mutex
	js    jetstream.JetStream
	epoch *jsEpoch      // nil while disconnected
	ready chan struct{} // closed while connected

	wg sync.WaitGroup // completion goroutines
}

// jsEpoch is one stretch of connectedness; lost is closed when it ends.
type jsEpoch struct{ lost chan struct{} }

func newJetStreamTransport(s *Sink, cfg *JetStreamConfig) (*jsTransport, error) {
	t := &jsTransport{s: s, cfg: cfg, sem: make(chan struct{}, cfg.Window), ready: make(chan struct{})}
	secure := false
	for _, raw := range strings.Split(cfg.URL, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("jetstream url: %s", redact.String(err.Error()))
		}
		switch u.Scheme {
		case "tls":
			secure = true
		case "nats":
		default:
			return nil, fmt.Errorf("jetstream url %s: scheme must be nats or tls", redact.URL(raw))
		}
	}
	t.opts = []nats.Option{
		nats.Name("moongate-" + s.cfg.GatewayID + "-" + s.cfg.Name),
		nats.Timeout(cfg.Timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(s.cfg.Backoff.Base),
		// Publishes made while disconnected fail instead of waiting in a
		// buffer: sent after the reconnect, they would overtake the resend
		// of the records lost with the connection.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { t.down(err) }),
		nats.ReconnectHandler(func(*nats.Conn) { t.up() }),
	}
	if secure || !cfg.TLS.Empty() {
		// nats.go sets the server name of each server it dials.
		tc, err := cfg.TLS.Config("")
		if err != nil {
			return nil, err
		}
		t.opts = append(t.opts, nats.Secure(tc))
	}
	if cfg.Creds != "" {
		if _, err := readSecretFile(cfg.Creds); err != nil {
			return nil, fmt.Errorf("jetstream creds: %w", err)
		}
		t.opts = append(t.opts, nats.UserCredentials(cfg.Creds))
	}
	return t, nil
}

func (t *jsTransport) keyed() bool { return false }

// run connects, lets nats.go keep the connection up, and closes it when ctx
// ends.
func (t *jsTransport) run(ctx context.Context) {
	defer t.wg.Wait()
	var nc *nats.Conn
	for failures := 0; ctx.Err() == nil; failures++ {
		var err error
		nc, err = nats.Connect(t.cfg.URL, t.opts...)
		if err == nil {
			break
		}
		t.s.connected(false, fmt.Errorf("jetstream connect %s: %s", redact.URL(t.cfg.URL), redact.String(err.Error())))
		select {
		case <-ctx.Done():
			return
		case <-t.s.cfg.Clock.After(t.s.cfg.Backoff.delay(failures)):
		}
	}
	if nc == nil {
		return
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(t.cfg.Window+1))
	if err != nil { // only for invalid options
		t.s.connected(false, fmt.Errorf("jetstream: %w", err))
		nc.Close()
		return
	}
	t.mu.Lock()
	t.js = js
	t.mu.Unlock()
	t.up()
	<-ctx.Done()
	nc.SetDisconnectErrHandler(nil)
	nc.Close()
	t.endEpoch()
}

// up starts an epoch.
func (t *jsTransport) up() {
	t.mu.Lock()
	if t.epoch == nil {
		t.epoch = &jsEpoch{lost: make(chan struct{})}
		close(t.ready)
	}
	t.mu.Unlock()
	t.s.connected(true, nil)
}

// down reports a lost connection and ends the epoch.
func (t *jsTransport) down(err error) {
	t.endEpoch()
	if err == nil {
		err = errNotConnected
	}
	t.s.connected(false, fmt.Errorf("jetstream: %w", err))
}

// endEpoch fails the epoch's pipes; open waits for the next one.
func (t *jsTransport) endEpoch() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.epoch != nil {
		close(t.epoch.lost)
		t.epoch = nil
		t.ready = make(chan struct{})
	}
}

// open waits up to Timeout for a connection and returns a pipe on it.
func (t *jsTransport) open(ctx context.Context, stream string) (pipe, error) {
	t.mu.Lock()
	ready := t.ready
	t.mu.Unlock()
	if err := awaitReady(ctx, ready, t.cfg.Timeout); err != nil {
		return nil, err
	}
	t.mu.Lock()
	ep, js := t.epoch, t.js
	t.mu.Unlock()
	if ep == nil {
		return nil, errNotConnected
	}
	p := &jsPipe{
		t: t, ep: ep, js: js,
		subjects: newPerFunction(strings.NewReplacer("{gateway}", subjectToken(t.s.cfg.GatewayID), "{stream}", subjectToken(stream)).Replace(t.cfg.Subject), subjectToken),
		prefix:   newPayloadPrefix(t.s.cfg.GatewayID, stream),
		outlet:   newOutlet[jsPub](t.cfg.Window + 1),
		failed:   make(chan struct{}),
	}
	t.wg.Go(p.complete)
	return p, nil
}

// subjectToken keeps a name one subject token that matches only itself.
func subjectToken(s string) string {
	return strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_", "\t", "_", "\r", "_", "\n", "_").Replace(s)
}

// jsPipe is one lane's publishes on the connection: each record is one
// asynchronous publish with Nats-Msg-Id = the record's id, and a batch is
// acknowledged when the stream's PubAck for each of its records is in. A
// failed publish stops the pipe at once, so that nothing published after
// it can land in the stream before its resend.
type jsPipe struct {
	t             *jsTransport
	ep            *jsEpoch
	js            jetstream.JetStream
	subjects      perFunction
	prefix        []byte
	outlet[jsPub]               // published, in order, for complete
	failed        chan struct{} // closed by complete at the first failure
	failOnce      sync.Once
}

type jsPub struct {
	fut jetstream.PubAckFuture
	b   *batch // set on the last record of a batch
	err error  // set when the batch could not be published whole
}

func (p *jsPipe) window() int { return int(^uint(0) >> 1) } // flow control is the semaphore

func (p *jsPipe) alive() bool {
	if p.shut {
		return false
	}
	select {
	case <-p.ep.lost:
		return false
	case <-p.failed:
		return false
	default:
		return true
	}
}

func (p *jsPipe) send(ctx context.Context, b *batch) {
	for i, r := range b.recs {
		var stop error
		select {
		case p.t.sem <- struct{}{}:
		case <-ctx.Done():
			stop = ctx.Err()
		case <-p.closed:
			stop = errPipeClosed
		case <-p.ep.lost:
			stop = errNotConnected
		case <-p.failed:
			stop = errPipeClosed
		}
		if stop == nil && !p.alive() { // the slot came free as the pipe failed
			<-p.t.sem
			stop = errPipeClosed
		}
		if stop != nil {
			p.queue <- jsPub{b: b, err: stop}
			return
		}
		msg := &nats.Msg{Subject: p.subjects.get(r.Function), Data: p.payload(r)}
		fut, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(r.ID),
			// No retries of its own: a retried publish could land after a later one.
			jetstream.WithRetryAttempts(0))
		if err != nil {
			<-p.t.sem
			p.queue <- jsPub{b: b, err: fmt.Errorf("jetstream publish: %w", err)}
			return
		}
		e := jsPub{fut: fut}
		if i == len(b.recs)-1 {
			e.b = b
		}
		p.queue <- e
	}
}

// complete waits for the PubAcks in publish order and completes batches.
func (p *jsPipe) complete() {
	var failed error
	fail := func(err error) {
		if failed == nil {
			failed = err
		}
		p.failOnce.Do(func() { close(p.failed) })
	}
	// One timer for all: a Pi Zero need not allocate one per record.
	timer := time.NewTimer(p.t.cfg.Timeout)
	defer timer.Stop()
	for e := range p.queue {
		if e.fut != nil && failed != nil {
			<-p.t.sem // the batch fails anyway: no need to wait for its fate
		} else if e.fut != nil {
			timer.Reset(p.t.cfg.Timeout)
			select {
			case <-e.fut.Ok():
			case err := <-e.fut.Err():
				fail(fmt.Errorf("jetstream publish: %w", err))
			case <-p.ep.lost:
				fail(errNotConnected)
			case <-timer.C:
				fail(errPubAckLate)
			}
			<-p.t.sem
		}
		if e.err != nil {
			fail(e.err)
		}
		if e.b == nil {
			continue
		}
		if failed != nil {
			e.b.done <- result{outcome: jsOutcome(failed), err: failed}
		} else {
			e.b.done <- result{outcome: delivered}
		}
	}
}

// jsOutcome is what the lane does after a failed publish: a record too large
// for the server or the stream is isolated and dead-lettered like a record
// an HTTP receiver rejects; a stream that does not answer (none for the
// subject, no leader yet) is retried with backoff, as is a lost connection
// (offline).
func jsOutcome(err error) outcome {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, errNotConnected):
		return unreachable
	case errors.Is(err, nats.ErrMaxPayload),
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return rejected
	}
	return retry
}

// payload is the MQTT bridge's.
func (p *jsPipe) payload(r store.Record) []byte { return recordPayload(p.prefix, r) }
