package sink

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moongate/moongate/sync/store"
)

// Outbox is what a sink needs of the store (*store.Store): it reads streams
// from its cursor, acknowledges, dead-letters into $dead, and keeps a little
// state of its own in meta.
type Outbox interface {
	RegisterConsumer(name string, patterns []string) error
	Streams() ([]string, error)
	Read(stream string, afterSeq uint64, maxRecords, maxBytes int) ([]store.Record, error)
	Cursor(consumer, stream string) (uint64, error)
	Ack(consumer, stream string, seq uint64) error
	// Changed is closed at the next append, then replaced.
	Changed() <-chan struct{}
	Append(ctx context.Context, recs ...store.Append) ([]store.Record, error)
	GetMeta(key string) ([]byte, bool, error)
	PutMeta(key string, v []byte) error
	Stats() store.Stats
}

// Publisher publishes on the local bus; HTTP sinks publish the downlink
// commands of 2xx responses with it.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error
}

// State is a sink's connectivity, driven by delivery results.
type State string

// States, from best to worst.
const (
	Online     State = "online"      // the last attempt delivered
	BackingOff State = "backing_off" // the receiver answered "not now" (408, 429, 5xx, auth); retrying
	Offline    State = "offline"     // the receiver could not be reached; retrying
	Disabled   State = "disabled"    // configured off
)

func (s State) rank() int {
	switch s {
	case BackingOff:
		return 1
	case Offline:
		return 2
	}
	return 0
}

// Causes of Status.Dropped.
const (
	dropDeadLetter = "dead_letter" // rejected by the receiver and moved to $dead
	dropCommand    = "command"     // downlink commands that could not be published
	dropQuota      = "quota"       // the outbox's on_full drop_oldest, in the sink's streams
	dropTTL        = "ttl"         // older than the outbox ttl, in the sink's streams
	dropRejected   = "rejected"    // refused by on_full reject_new, in the sink's streams
	dropEvicted    = "evicted"     // internal: records this sink never got (Status.Missed)
)

// Status is a snapshot of one sink, for GET /api/v1/sync and the metrics.
type Status struct {
	Name  string    `json:"name"`
	Kind  string    `json:"kind"` // "http", "mqtt" or "jetstream"
	State State     `json:"state"`
	Since time.Time `json:"since"` // when State was entered
	// LastSuccess is the time of the last delivery; zero if none yet.
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Lag is the age of the oldest record not yet delivered; 0 if none.
	Lag time.Duration `json:"lag_ns"`
	// PendingRecords are the records of the sink's streams after its cursors.
	PendingRecords int64 `json:"pending_records"`
	// PendingBytes are their outbox bytes (key and value), estimated from
	// their stream's bytes when other consumers are further behind.
	PendingBytes int64 `json:"pending_bytes"`
	// Delivered counts records acknowledged by the receiver since start,
	// resends included.
	Delivered uint64 `json:"delivered"`
	// Retried counts records that were in flight when an attempt failed and
	// so are sent again.
	Retried uint64 `json:"retried"`
	// Dropped counts by cause: "dead_letter" and "command" by this sink since
	// start; "quota", "ttl" and "rejected" from the outbox for the sink's
	// streams (persistent, shared with the other sinks of those streams).
	Dropped map[string]uint64 `json:"dropped"`
	// Missed counts records this sink never got since start because the
	// outbox dropped them first (quota or ttl).
	Missed uint64 `json:"missed"`
	// Commands counts downlink commands published.
	Commands uint64 `json:"commands"`
	// InFlight is the records sent and not yet acknowledged.
	InFlight int64 `json:"in_flight"`
}

// Log keys.
const (
	logKeySink   = "sink"
	logKeyStream = "stream"
	logKeyErr    = "err" // as every package's logs name an error
)

// Sink drains the outbox to one receiver. Create it with New, run it with
// Run; Status may be called at any time from any goroutine.
type Sink struct {
	cfg  Config
	kind string
	out  Outbox
	pub  Publisher
	log  *slog.Logger
	tr   transport

	delivered, retried, commands atomic.Uint64

	mu          sync.Mutex
	lanes       map[string]*lane
	connState   State // the MQTT connection; always Online for HTTP
	state       State
	since       time.Time
	lastSuccess time.Time
	lastError   string
	lastErrorAt time.Time
	dropped     map[string]uint64
}

// New checks cfg, loads its TLS files, and registers the sink as a consumer
// of its streams, so the outbox keeps their records for it from now on.
// Create every sink before running any: a record is trimmed once every
// registered consumer of its stream acknowledged it. A disabled sink is not
// registered and keeps nothing. pub may be nil when no downlink commands are
// wanted; logger may be nil.
func New(cfg Config, out Outbox, pub Publisher, logger *slog.Logger) (*Sink, error) {
	s, err := build(cfg, logger)
	if err != nil {
		return nil, err
	}
	s.out, s.pub = out, pub
	if s.cfg.Disabled {
		s.state = Disabled
		return s, nil
	}
	if err := out.RegisterConsumer(s.cfg.Name, s.cfg.Streams); err != nil {
		return nil, fmt.Errorf("sink %s: %w", s.cfg.Name, err)
	}
	return s, nil
}

// Check refuses cfg for every reason New would, without an outbox: the config, the
// TLS files, the transport's settings. It is what `moongate check` runs for a sink.
func Check(cfg Config) error {
	_, err := build(cfg, nil)
	return err
}

// build checks cfg and prepares the transport; nothing is opened or registered.
func build(cfg Config, logger *slog.Logger) (*Sink, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Sink{
		cfg: c, log: logger.With(logKeySink, c.Name),
		lanes: make(map[string]*lane), connState: Online, state: Online, since: c.Clock.Now(),
		dropped: make(map[string]uint64),
	}
	switch {
	case c.HTTP != nil:
		s.kind = "http"
		s.tr, err = newHTTPTransport(c.HTTP, c.GatewayID, c.Clock.Now)
	case c.JetStream != nil:
		s.kind = "jetstream"
		s.connState, s.state = Offline, Offline
		s.tr, err = newJetStreamTransport(s, c.JetStream)
	default:
		s.kind = "mqtt"
		s.connState = Offline
		s.state = Offline
		s.tr, err = newMQTTTransport(s, c.MQTT)
	}
	if err != nil {
		return nil, fmt.Errorf("sink %s: %w", c.Name, err)
	}
	return s, nil
}

// scanEvery bounds how often Run lists the streams: new streams are rare,
// appends are not.
const scanEvery = 50 * time.Millisecond

// Run drains the sink's streams until ctx ends, then writes the cursors and
// returns nil. Each stream gets a lane when it first appears.
func (s *Sink) Run(ctx context.Context) error {
	if s.cfg.Disabled {
		<-ctx.Done()
		return nil
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.tr.run(ctx) })
	for {
		changed := s.out.Changed()
		streams, err := s.out.Streams()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Error("list streams", logKeyErr, err)
			s.noteError(err)
		}
		for _, name := range streams {
			if !s.takes(name) {
				continue
			}
			s.mu.Lock()
			_, ok := s.lanes[name]
			if !ok {
				l := newLane(s, name)
				s.lanes[name] = l
				wg.Go(func() { l.run(ctx) })
			}
			s.mu.Unlock()
		}
		last := s.cfg.Clock.Now()
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		if d := scanEvery - s.cfg.Clock.Now().Sub(last); d > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-s.cfg.Clock.After(d):
			}
		}
	}
}

// takes matches a stream the way the store matches consumers.
func (s *Sink) takes(stream string) bool { return store.MatchStream(s.cfg.Streams, stream) }

// Status returns a snapshot of the sink.
func (s *Sink) Status() Status {
	st := s.outboxStatus()
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Name, st.Kind, st.State, st.Since = s.cfg.Name, s.kind, s.state, s.since
	st.LastSuccess, st.LastError, st.LastErrorAt = s.lastSuccess, s.lastError, s.lastErrorAt
	st.Delivered, st.Retried, st.Commands = s.delivered.Load(), s.retried.Load(), s.commands.Load()
	for k, v := range s.dropped {
		if k == dropEvicted {
			st.Missed = v
			continue
		}
		st.Dropped[k] += v
	}
	for _, l := range s.lanes {
		st.InFlight += l.inRecords.Load()
	}
	return st
}

// outboxStatus fills what the store knows: pending records, bytes, lag and
// the outbox's drops in the sink's streams.
func (s *Sink) outboxStatus() Status {
	st := Status{Dropped: make(map[string]uint64)}
	if s.cfg.Disabled {
		return st
	}
	stats := s.out.Stats()
	var oldest int64
	for stream, cs := range stats.Consumers[s.cfg.Name] {
		ss := stats.Streams[stream]
		st.PendingRecords += cs.Pending
		if ss.Pending > 0 {
			st.PendingBytes += ss.Bytes * cs.Pending / ss.Pending
		}
		if cs.OldestMs > 0 && (oldest == 0 || cs.OldestMs < oldest) {
			oldest = cs.OldestMs
		}
	}
	for stream, ss := range stats.Streams {
		if !s.takes(stream) {
			continue
		}
		st.Dropped[dropQuota] += ss.Dropped.Quota
		st.Dropped[dropTTL] += ss.Dropped.TTL
		st.Dropped[dropRejected] += ss.Dropped.Rejected
	}
	if oldest > 0 {
		st.Lag = max(s.cfg.Clock.Now().Sub(time.UnixMilli(oldest)), 0)
	}
	return st
}

func (s *Sink) drop(cause string, n uint64) {
	s.mu.Lock()
	s.dropped[cause] += n
	s.mu.Unlock()
}

func (s *Sink) noteError(err error) {
	s.mu.Lock()
	s.lastError, s.lastErrorAt = err.Error(), s.cfg.Clock.Now()
	s.mu.Unlock()
}

// succeeded records a delivery by l.
func (s *Sink) succeeded(l *lane) {
	s.mu.Lock()
	s.lastSuccess = s.cfg.Clock.Now()
	l.state = Online
	s.settle()
}

// failedWith records a failed attempt by l. The MQTT bridge's lanes only
// fail when the shared connection does, and the connection's own state says
// that already: a lane still finishing with the old connection must not
// turn a bridge that has reconnected back to offline. (A JetStream lane
// can fail on a live connection: the stream has no leader, or none at all.)
func (s *Sink) failedWith(l *lane, st State, err error) {
	s.mu.Lock()
	if err != nil {
		s.lastError, s.lastErrorAt = err.Error(), s.cfg.Clock.Now()
	}
	if s.kind != "mqtt" {
		l.state = st
	}
	s.settle()
}

// connected records the state of the MQTT or NATS connection.
func (s *Sink) connected(up bool, err error) {
	s.mu.Lock()
	s.connState = Online
	if !up {
		s.connState = Offline
		if err != nil {
			s.lastError, s.lastErrorAt = err.Error(), s.cfg.Clock.Now()
		}
	}
	s.settle()
}

// settle recomputes the sink's state, the worst of its lanes and its
// connection, and reports a change once. It is called with s.mu held and
// releases it.
func (s *Sink) settle() {
	if s.state == Disabled {
		s.mu.Unlock()
		return
	}
	worst := s.connState
	for _, l := range s.lanes {
		if l.state.rank() > worst.rank() {
			worst = l.state
		}
	}
	if worst == s.state {
		s.mu.Unlock()
		return
	}
	from := s.state
	s.state, s.since = worst, s.cfg.Clock.Now()
	lastErr := s.lastError
	s.mu.Unlock()
	if worst == Online {
		s.log.Info("sink state", "from", from, "to", worst)
	} else {
		s.log.Warn("sink state", "from", from, "to", worst, logKeyErr, lastErr)
	}
	if s.cfg.OnTransition != nil {
		s.cfg.OnTransition(s.Status())
	}
}
