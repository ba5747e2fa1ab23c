package sink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/redact"
	"github.com/moongate/moongate/sync/store"
)

var (
	errNotConnected = errors.New("mqtt: not connected")
	errPubackLate   = errors.New("mqtt: no PUBACK in time")
)

// mqttTransport bridges records to a cloud broker on its own paho
// connection. A keeper goroutine holds the connection up (with backoff) so
// the state is right even when no lane is sending; lanes share the
// connection, and at most Window PUBLISHes are outstanding on it.
type mqttTransport struct {
	s   *Sink
	cfg *MQTTConfig
	tls *tls.Config
	sem chan struct{} // one slot per outstanding PUBLISH

	mu    sync.Mutex
	conn  *mqttConn     // nil while disconnected
	ready chan struct{} // closed while conn is up

	wg sync.WaitGroup // completion goroutines
}

// mqttConn is one connection; lost is closed when it ends.
type mqttConn struct {
	cli  paho.Client
	lost chan struct{}
	once sync.Once
	err  error
}

func (c *mqttConn) end(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.lost)
	})
}

func (c *mqttConn) up() bool {
	select {
	case <-c.lost:
		return false
	default:
		return true
	}
}

func newMQTTTransport(s *Sink, cfg *MQTTConfig) (*mqttTransport, error) {
	u, err := url.Parse(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("mqtt broker: %s", redact.String(err.Error())) // url.Error quotes the URL
	}
	if cfg.Window > 65535 {
		return nil, fmt.Errorf("mqtt window %d: at most 65535 packet ids", cfg.Window)
	}
	t := &mqttTransport{s: s, cfg: cfg, sem: make(chan struct{}, cfg.Window), ready: make(chan struct{})}
	switch u.Scheme {
	case "ssl", "tls", "mqtts", "tcps", "wss":
		t.tls, err = cfg.TLS.Config(u.Hostname())
		if err != nil {
			return nil, err
		}
	case "tcp", "mqtt", "ws":
		if cfg.TLS.CA != "" || cfg.TLS.Cert != "" {
			return nil, fmt.Errorf("mqtt broker %s: tls files given for a plain connection", redact.URL(cfg.Broker))
		}
	default:
		return nil, fmt.Errorf("mqtt broker %s: unknown scheme", redact.URL(cfg.Broker))
	}
	return t, nil
}

func (t *mqttTransport) keyed() bool { return false }

// redactedError hides the credentials of a URL that paho's error may quote.
type redactedError struct{ err error }

func (e redactedError) Error() string { return redact.String(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }

// run keeps a connection up until ctx ends, then closes it and waits for
// the outstanding PUBLISHes to complete.
func (t *mqttTransport) run(ctx context.Context) {
	defer t.wg.Wait()
	failures := 0
	for ctx.Err() == nil {
		c, err := t.dial(ctx)
		if err != nil {
			t.s.connected(false, err)
			d := t.s.cfg.Backoff.delay(failures)
			failures++
			select {
			case <-ctx.Done():
			case <-t.s.cfg.Clock.After(d):
			}
			continue
		}
		failures = 0
		t.mu.Lock()
		t.conn = c
		close(t.ready)
		t.mu.Unlock()
		t.s.connected(true, nil)
		select {
		case <-c.lost:
		case <-ctx.Done():
			c.end(context.Canceled)
		}
		t.mu.Lock()
		t.conn = nil
		t.ready = make(chan struct{})
		t.mu.Unlock()
		c.cli.Disconnect(100)
		if ctx.Err() == nil {
			t.s.connected(false, fmt.Errorf("mqtt connection lost: %w", c.err))
		}
	}
}

func (t *mqttTransport) dial(ctx context.Context) (*mqttConn, error) {
	c := &mqttConn{lost: make(chan struct{})}
	o := paho.NewClientOptions().
		AddBroker(t.cfg.Broker).
		SetClientID(t.cfg.ClientID).
		SetUsername(t.cfg.Username).
		SetPassword(t.cfg.Password).
		// The outbox is the session: resends come from the cursor, so the
		// broker and paho keep nothing across connections.
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(t.cfg.Timeout).
		SetWriteTimeout(t.cfg.Timeout).
		SetKeepAlive(t.cfg.KeepAlive).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.end(err) })
	if t.tls != nil {
		o.SetTLSConfig(t.tls)
	}
	c.cli = paho.NewClient(o)
	tok := c.cli.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		t.wg.Go(func() {
			<-tok.Done()
			c.cli.Disconnect(0)
		})
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("mqtt connect %s: %w", redact.URL(t.cfg.Broker), redactedError{err})
	}
	return c, nil
}

// open waits up to Timeout for the connection and returns a pipe on it.
func (t *mqttTransport) open(ctx context.Context, stream string) (pipe, error) {
	t.mu.Lock()
	ready := t.ready
	t.mu.Unlock()
	if err := awaitReady(ctx, ready, t.cfg.Timeout); err != nil {
		return nil, err
	}
	t.mu.Lock()
	c := t.conn
	t.mu.Unlock()
	if c == nil {
		return nil, errNotConnected
	}
	p := &mqttPipe{
		t:      t,
		c:      c,
		topics: newPerFunction(strings.NewReplacer("{gateway}", topicLevel(t.s.cfg.GatewayID), "{stream}", topicLevel(stream)).Replace(t.cfg.Topic), topicLevel),
		prefix: newPayloadPrefix(t.s.cfg.GatewayID, stream),
		outlet: newOutlet[pub](t.cfg.Window + 1),
	}
	t.wg.Go(p.complete)
	return p, nil
}

// topicLevel keeps a name from turning into a wildcard.
func topicLevel(s string) string {
	return strings.NewReplacer("+", "_", "#", "_", "\x00", "_").Replace(s)
}

// mqttPipe is one lane's view of the connection: it publishes each record
// of a batch and completes the batch when every PUBACK is in.
type mqttPipe struct {
	t           *mqttTransport
	c           *mqttConn
	topics      perFunction
	prefix      []byte
	outlet[pub] // published, in order, for complete
}

// pub is one PUBLISH awaiting its PUBACK; the last one of a batch carries it.
type pub struct {
	tok paho.Token
	b   *batch // set on the last record of a batch
	err error  // set when the batch could not be published whole
}

func (p *mqttPipe) window() int { return int(^uint(0) >> 1) } // flow control is the semaphore
func (p *mqttPipe) alive() bool { return !p.shut && p.c.up() }

func (p *mqttPipe) send(ctx context.Context, b *batch) {
	for i, r := range b.recs {
		select {
		case p.t.sem <- struct{}{}:
		case <-ctx.Done():
			p.queue <- pub{b: b, err: ctx.Err()}
			return
		case <-p.closed:
			p.queue <- pub{b: b, err: errPipeClosed}
			return
		case <-p.c.lost:
			p.queue <- pub{b: b, err: errNotConnected}
			return
		}
		e := pub{tok: p.c.cli.Publish(p.topics.get(r.Function), p.t.cfg.QoS, false, p.payload(r))}
		if i == len(b.recs)-1 {
			e.b = b
		}
		p.queue <- e
	}
}

// complete waits for the PUBACKs in publish order and completes batches.
// A missing PUBACK ends the connection, which fails every other PUBLISH
// still outstanding: the lanes then resend from their cursors.
func (p *mqttPipe) complete() {
	var failed error
	for e := range p.queue {
		if e.tok != nil {
			timer := time.NewTimer(p.t.cfg.Timeout)
			select {
			case <-e.tok.Done():
				if err := e.tok.Error(); err != nil && failed == nil {
					failed = fmt.Errorf("mqtt publish: %w", err)
				}
			case <-timer.C:
				if failed == nil {
					failed = errPubackLate
				}
				p.c.end(errPubackLate)
				p.c.cli.Disconnect(0)
				<-e.tok.Done()
			}
			timer.Stop()
			<-p.t.sem
		}
		if e.err != nil && failed == nil {
			failed = e.err
		}
		if e.b == nil {
			continue
		}
		if failed != nil {
			e.b.done <- result{outcome: unreachable, err: failed}
		} else {
			e.b.done <- result{outcome: delivered}
		}
		failed = nil
	}
}

// newPayloadPrefix starts every payload of a stream:
//
//	{"gateway":"g","stream":"s","id":"..","seq":1,"ts":2,"function":"f","data":{}}
func newPayloadPrefix(gateway, stream string) []byte {
	b := []byte(`{"gateway":`)
	b = appendString(b, gateway)
	b = append(b, `,"stream":`...)
	b = appendString(b, stream)
	return append(b, ',')
}

func (p *mqttPipe) payload(r store.Record) []byte { return recordPayload(p.prefix, r) }

// recordPayload is one record on its own after the prefix of its stream.
func recordPayload(prefix []byte, r store.Record) []byte {
	b := make([]byte, 0, len(prefix)+len(r.Data)+96)
	b = append(b, prefix...)
	b = appendRecordFields(b, r)
	return append(b, '}')
}
