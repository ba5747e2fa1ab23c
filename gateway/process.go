package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/internal/throttle"
	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sync/store"
)

// A task is one event for one function. done is called exactly once: after the
// invocation's effects are durable (or the event went to $dead), or with errAbandoned when
// the gateway stops before it ran, so the source can leave it unacknowledged.
type task struct {
	ev      *luafn.Event
	key     string   // ordering key: events with the same key run one after another
	durable bool     // QoS 1: retried on failure, acknowledged only after commit
	chain   []string // the functions whose publishes led to this event (mqtt.WithChain)
	done    func(error)
}

// processor takes one event of one function to its end. It is shared by every function.
type processor struct {
	store committer
	bus   mqttPublisher
	pins  interface {
		WritePin(pin string, level int) error
	}
	live    *live
	metrics *metrics
	logger  *slog.Logger
	loopLog *throttle.Failures // logs a function's stopped loops once a minute
	// backoff is the wait before the first retry of a failed durable event (Options.RetryBackoff).
	backoff time.Duration
	// lazyCommits: gateway.durability is batch, so a commit nobody waits for may wait for
	// its sync.
	lazyCommits bool
	maxHops     int // gateway.loops.max_hops
	clock       Clock
	ctx         context.Context // cancelled when the gateway stops taking events
	stopping    <-chan struct{} // closed then too
}

// committer is what processing needs of the store.
type committer interface {
	Commit(ctx context.Context, c store.Commit) error
}

// mqttPublisher is what processing (and the sinks' downlink) needs of the bus.
type mqttPublisher interface {
	Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error
}

var errAbandoned = errors.New("event handed back unacknowledged: the gateway is stopping or the function was deleted")

// process runs one task to its end: invoke, commit, then the effects that touch the world.
// Tries count the function's failures only. A commit that fails (disk full, I/O error) is
// not the function's fault: the same effects are committed again until the store takes
// them, holding the event's key, so later events of that key never overtake it. It returns
// errAbandoned if the gateway stopped before the task's effects were durable. Each try
// runs the function's current version (cur), so a redeploy takes over at the next try.
func (p *processor) process(ctx context.Context, cur func() *version, t *task) error {
	tries := 1
	backoff := p.backoff
	for attempt := 1; ; attempt++ {
		v := cur()
		if v == nil { // deleted meanwhile
			return errAbandoned
		}
		if t.durable {
			tries = 1 + v.retries
		}
		res, err := p.invoke(ctx, v, t.ev)
		if ctx.Err() != nil { // deleted while it ran: no retry, no dead letter
			return errAbandoned
		}
		if errors.Is(err, luafn.ErrClosed) {
			// Swapped out by a redeploy before it ran: the event goes to the new version,
			// without spending a try.
			attempt--
			continue
		}
		if err == nil {
			c := commitOf(v, res, p.clock.Now())
			// Only what nobody waits for may wait for its sync: a QoS 1 ack follows the commit.
			c.Lazy = p.lazyCommits && !t.durable
			err = p.commitUntilStored(ctx, v, t.ev, c)
			if err == nil {
				p.afterCommit(v, t, res)
				return nil
			}
			var refused *commitRefused
			if !errors.As(err, &refused) {
				return err // abandoned
			}
			// What the store can never take is the function's failure: retried, then
			// dead-lettered with the reason, so that its topic is not held for ever.
		}
		if attempt >= tries {
			p.logger.Warn("invocation failed: the event goes to "+store.DeadStream, logkey.Function, v.name, logkey.Version, v.number,
				logkey.Event, t.ev.ID, "tries", attempt, logkey.Err, err)
			return p.deadLetter(ctx, v, t.ev, err, attempt)
		}
		p.logger.Warn("invocation failed, retrying", logkey.Function, v.name, logkey.Version, v.number,
			logkey.Event, t.ev.ID, "attempt", attempt, logkey.Err, err)
		if !p.sleep(ctx, backoff) {
			return errAbandoned
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// commitRefused is a commit the store refuses for what it holds (a key or a record too
// large, a name it does not accept): no retry of the commit can succeed.
type commitRefused struct{ err error }

func (e *commitRefused) Error() string { return "the store refused the effects: " + e.err.Error() }
func (e *commitRefused) Unwrap() error { return e.err }

// commitUntilStored commits c, retrying with capped backoff while the store refuses it for
// a reason that passes (a full disk, an I/O error); a refusal for what c holds is returned
// at once, as a *commitRefused.
// It logs the first failure of a streak and the recovery, not every retry.
func (p *processor) commitUntilStored(ctx context.Context, v *version, ev *luafn.Event, c store.Commit) error {
	if emptyCommit(c) {
		return nil
	}
	backoff := p.backoff
	for failures := 0; ; failures++ {
		err := p.store.Commit(ctx, c) // the same commit each try (commitOf)
		if err == nil {
			if failures > 0 {
				p.logger.Info("commit succeeded again", logkey.Function, v.name, logkey.Event, ev.ID, "failed_tries", failures)
			}
			return nil
		}
		if ctx.Err() != nil {
			return errAbandoned
		}
		p.metrics.commitErrors.Inc()
		if errors.Is(err, store.ErrTooLarge) || errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrQuota) {
			return &commitRefused{err}
		}
		if failures == 0 {
			p.logger.Error("commit failed; retrying until the store takes it (the event stays unacknowledged)",
				logkey.Function, v.name, logkey.Event, ev.ID, logkey.Err, err)
		}
		if !p.sleep(ctx, backoff) {
			return errAbandoned
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// sleep waits d, or reports false at once when the gateway stops or ctx ends.
func (p *processor) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-p.stopping:
		return false
	case <-ctx.Done():
		return false
	case <-p.clock.After(d):
		return true
	}
}

// invoke runs the function and reports the invocation to metrics and the live console.
func (p *processor) invoke(ctx context.Context, v *version, ev *luafn.Event) (*luafn.Result, error) {
	start := time.Now() // a duration is measured on the real clock, whatever Options.Clock says
	res, err := v.fn.Invoke(ctx, ev)
	d := time.Since(start)
	if res != nil && res.Duration > 0 {
		d = res.Duration
	}
	v.stats.observe(d, err)
	p.live.invocation(v, ev, res, d, err)
	return res, err
}

// afterCommit applies what must not happen unless the commit did: publishes and pin writes.
// A publish carries the chain of functions that led to it, this one last; past
// gateway.loops.max_hops it is refused (a loop), and a function's publishes wait for its
// share of gateway.loops.publish_rate.
func (p *processor) afterCommit(v *version, t *task, res *luafn.Result) {
	if len(res.Effects.Publishes) > 0 {
		chain := append(slices.Clip(t.chain), v.name)
		if len(chain) > p.maxHops {
			p.loopStopped(v, t.ev, chain, res.Effects.Publishes)
		} else {
			ctx := mqtt.WithChain(context.WithoutCancel(p.ctx), chain)
			for _, pub := range res.Effects.Publishes {
				if v.publishes != nil && !v.publishes.Allow() {
					p.metrics.publishesDelayed.WithLabelValues(v.name).Inc()
					if err := v.publishes.Wait(p.ctx); err != nil {
						return // stopping: what is committed stays committed
					}
				}
				if err := p.bus.Publish(ctx, pub.Topic, pub.Payload, pub.QoS, pub.Retain); err != nil {
					p.logger.Warn("publish after commit failed", logkey.Function, v.name, logkey.Topic, pub.Topic, logkey.Err, err)
					p.metrics.publishErrors.Inc()
				}
			}
		}
	}
	for _, w := range res.Effects.PinWrites {
		if err := p.pins.WritePin(w.Pin, w.Level); err != nil {
			p.logger.Warn("gpio write after commit failed", logkey.Function, v.name, logkey.Pin, w.Pin, logkey.Err, err)
		}
	}
}

// loopStopped refuses the publishes of an invocation that is max_hops deep in a chain of
// functions triggering each other: counted, logged once a minute per function, and shown
// on the function's live log with the functions involved.
func (p *processor) loopStopped(v *version, ev *luafn.Event, chain []string, pubs []luafn.Publish) {
	p.metrics.loopsStopped.WithLabelValues(v.name).Add(float64(len(pubs)))
	msg := fmt.Sprintf("loop stopped: %d publishes to %s refused, %d functions deep (gateway.loops.max_hops %d): %s",
		len(pubs), pubs[0].Topic, len(chain), p.maxHops, strings.Join(chain, " → "))
	if p.loopLog.Fail(v.name) {
		p.logger.Error(msg+" (logged once a minute per function)", logkey.Function, v.name, logkey.Event, ev.ID)
	}
	p.live.log(luafn.LogRecord{Function: v.name, Version: v.number, EventID: ev.ID,
		LogEntry: luafn.LogEntry{Time: p.clock.Now(), Level: slog.LevelError, Message: msg}})
}

// deadRecord is what $dead holds for an event that failed every try.
type deadRecord struct {
	Function string      `json:"function"`
	Version  int         `json:"version"`
	Error    string      `json:"error"`
	Tries    int         `json:"tries"`
	Event    eventRecord `json:"event"`
}

// deadLetter records the failed event in $dead. The event then counts as handled: its
// source is acknowledged, so a poison message cannot block its topic forever.
func (p *processor) deadLetter(ctx context.Context, v *version, ev *luafn.Event, cause error, tries int) error {
	data, err := json.Marshal(deadRecord{Function: v.name, Version: v.number, Error: cause.Error(), Tries: tries, Event: recordOf(ev)})
	if err != nil {
		return fmt.Errorf("encode dead letter: %w", err)
	}
	c := store.Commit{Namespace: v.name, Records: []store.Append{{Stream: store.DeadStream, Function: v.name, Data: data, TS: p.clock.Now().UnixMilli()}}}
	if err := p.commitUntilStored(ctx, v, ev, c); err != nil {
		return err
	}
	p.metrics.deadLetters.WithLabelValues(v.name).Inc()
	return nil
}

// eventRecord is an event as JSON, for $dead and the live console.
type eventRecord struct {
	ID      string             `json:"id"`
	Source  string             `json:"source"`
	TS      int64              `json:"ts"`
	Topic   string             `json:"topic,omitempty"`
	Payload json.RawMessage    `json:"payload,omitempty"`
	Raw     string             `json:"raw,omitempty"`
	QoS     byte               `json:"qos,omitempty"`
	Pin     string             `json:"pin,omitempty"`
	Level   int                `json:"level,omitempty"`
	Edge    string             `json:"edge,omitempty"`
	Sensor  string             `json:"sensor,omitempty"`
	Values  map[string]float64 `json:"values,omitempty"`
}

func recordOf(ev *luafn.Event) eventRecord {
	r := eventRecord{ID: ev.ID, Source: ev.Source, TS: ev.TS, Topic: ev.Topic, QoS: ev.QoS,
		Pin: ev.Pin, Level: ev.Level, Edge: ev.Edge, Sensor: ev.Sensor, Values: ev.Values}
	if json.Valid(ev.Payload) {
		r.Payload = ev.Payload
	} else if len(ev.Payload) > 0 {
		r.Raw = string(ev.Payload)
	}
	return r
}

// logAbandon is used by sources that hand an event back.
func logAbandon(l *slog.Logger, what string, err error) {
	if err != nil && !errors.Is(err, errAbandoned) {
		l.Warn("event not acknowledged", "source", what, logkey.Err, err)
	}
}
