package gateway

import (
	"encoding/binary"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/oklog/ulid/v2"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sensors"
)

// routes is a snapshot of which function each trigger starts, rebuilt on every deploy.
type routes struct {
	mqtt   []mqttRoute
	sensor map[string][]string        // sensor name -> functions
	gpio   map[sensors.Watch][]string // edges are selected and debounced per watch by sensors
	subs   map[string]byte            // filter -> highest QoS asked for
}

type mqttRoute struct {
	filter string
	qos    byte
	fn     string
}

// router turns messages, readings, edges and ticks into tasks for the functions.
type router struct {
	functions *registry
	metrics   *metrics
	live      *live
	clock     Clock
	logger    *slog.Logger

	mu         sync.Mutex
	bus        subscriber // set by start: the subscriptions follow the routes from then on
	running    bool
	subscribed map[string]byte
	timers     map[string]func() // "function|spec" -> stop
	ticking    sync.WaitGroup    // the timers' goroutines: stop waits for them
	stopped    atomic.Bool
}

// subscriber is what the router needs of the bus.
type subscriber interface {
	Subscribe(mqtt.Subscription) error
	Unsubscribe(filter string) error
}

func newRouter(functions *registry, m *metrics, l *live, clock Clock, logger *slog.Logger) *router {
	return &router{functions: functions, metrics: m, live: l, clock: clock, logger: logger, timers: map[string]func(){}}
}

// newEventID is a ULID whose random part comes from the runtime's per-thread generator:
// ulid.Make's one monotonic source takes a lock, which a hundred device connections
// contended for at full speed (issue 12). IDs made in the same millisecond are unique
// (80 random bits) but not ordered among themselves; nothing orders events by id.
func newEventID() string { return ulid.MustNew(ulid.Now(), eventEntropy{}).String() }

// eventEntropy reads math/rand/v2's generator, which needs no lock.
type eventEntropy struct{}

func (eventEntropy) Read(p []byte) (int, error) {
	for i := 0; i < len(p); {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], rand.Uint64())
		i += copy(p[i:], b[:])
	}
	return len(p), nil
}

// routesOf is the routes the triggers of fns make.
func routesOf(fns fnTable) *routes {
	rt := &routes{sensor: map[string][]string{}, gpio: map[sensors.Watch][]string{}, subs: map[string]byte{}}
	for _, name := range slices.Sorted(maps.Keys(fns)) {
		v := fns[name]
		for _, t := range v.triggers {
			switch t.Kind {
			case config.TriggerMQTT:
				rt.mqtt = append(rt.mqtt, mqttRoute{filter: t.Filter, qos: t.QoS, fn: v.name})
				if q, ok := rt.subs[t.Filter]; !ok || t.QoS > q {
					rt.subs[t.Filter] = t.QoS
				}
			case config.TriggerSensor:
				rt.sensor[t.Sensor] = append(rt.sensor[t.Sensor], v.name)
			case config.TriggerGPIO:
				rt.gpio[t.Watch] = append(rt.gpio[t.Watch], v.name)
			}
		}
	}
	return rt
}

// rebuild brings the bus subscriptions and the timers in line with the current routes,
// once the router has started.
func (r *router) rebuild() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		r.syncSubscriptions(r.functions.routes())
		r.syncTimers()
	}
}

func (r *router) subscriptions() []mqtt.Subscription {
	rt := r.functions.routes()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subscribed = map[string]byte{}
	var subs []mqtt.Subscription
	for f, q := range rt.subs {
		subs = append(subs, mqtt.Subscription{Filter: f, QoS: q})
		r.subscribed[f] = q
	}
	return subs
}

// start is called once bus has subscribed the initial routes.
func (r *router) start(bus subscriber) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bus, r.running = bus, true
	r.syncSubscriptions(r.functions.routes())
	r.syncTimers()
}

func (r *router) stop() {
	r.stopped.Store(true)
	r.mu.Lock()
	r.running = false
	for k, stop := range r.timers {
		stop()
		delete(r.timers, k)
	}
	r.mu.Unlock()
	r.ticking.Wait() // a tick being dispatched ends first
}

func (r *router) syncSubscriptions(rt *routes) {
	for f, q := range rt.subs {
		if old, ok := r.subscribed[f]; ok && old == q {
			continue
		}
		if err := r.bus.Subscribe(mqtt.Subscription{Filter: f, QoS: q}); err != nil {
			r.logger.Error("subscribe", "filter", f, logkey.Err, err)
			continue
		}
		r.subscribed[f] = q
	}
	for f := range r.subscribed {
		if _, ok := rt.subs[f]; ok {
			continue
		}
		if err := r.bus.Unsubscribe(f); err != nil {
			r.logger.Warn("unsubscribe", "filter", f, logkey.Err, err)
		}
		delete(r.subscribed, f)
	}
}

// syncTimers starts the every: triggers of current versions and stops the others.
func (r *router) syncTimers() {
	want := map[string]config.Trigger{}
	for _, v := range r.functions.all() {
		for _, t := range v.triggers {
			if t.Kind == config.TriggerEvery {
				want[v.name+"|"+t.Spec] = t
			}
		}
	}
	for k, stop := range r.timers {
		if _, ok := want[k]; !ok {
			stop()
			delete(r.timers, k)
		}
	}
	for k, t := range want {
		if _, ok := r.timers[k]; ok {
			continue
		}
		fn := k[:len(k)-len(t.Spec)-1]
		done := make(chan struct{})
		r.timers[k] = func() { close(done) }
		r.ticking.Add(1)
		go func() {
			defer r.ticking.Done()
			for {
				select {
				case <-done:
					return
				case now := <-r.clock.After(t.Every):
					ev := &luafn.Event{ID: newEventID(), Source: "timer", TS: now.UnixMilli(), Topic: t.Spec}
					r.dispatch(fn, ev, "timer:"+t.Spec, false, nil, source{}, func(error) {})
				}
			}
		}()
	}
}

// dispatch hands one event to one function; with src.wait, it may hold the caller while
// the function is full (see maxPending), and with src.inline run the event on the
// caller's goroutine.
func (r *router) dispatch(fn string, ev *luafn.Event, key string, durable bool, chain []string, src source, done func(error)) {
	e := r.functions.entry(fn)
	if e == nil {
		done(nil)
		return
	}
	e.exec.enqueue(&task{ev: ev, key: key, durable: durable, chain: chain, done: done}, src)
}

// HandleMessage implements mqtt.Handler: every function whose trigger matches gets the
// message; it is acknowledged once all of them have committed.
func (r *router) HandleMessage(m *mqtt.Message) {
	if r.stopped.Load() {
		return // not acknowledged: redelivered after restart
	}
	rt := r.functions.routes()
	var matched [4]string // a message goes to one or a few functions: no allocation
	fns := matched[:0]
	for _, rt := range rt.mqtt {
		if mqtt.Match(rt.filter, m.Topic) && !slices.Contains(fns, rt.fn) {
			fns = append(fns, rt.fn)
		}
	}
	ev := &luafn.Event{ID: newEventID(), Source: "mqtt", TS: r.clock.Now().UnixMilli(), Topic: m.Topic, Payload: m.Payload, QoS: m.QoS}
	r.metrics.mqttEvents.Inc()
	r.live.event(ev)
	if len(fns) == 0 {
		m.Ack()
		return
	}
	d := &delivery{m: m, logger: r.logger}
	d.pending.Store(int32(len(fns)))
	key, src := "mqtt:"+m.Topic, source{wait: m.MayWait, inline: m.OnSenderGoroutine}
	for _, fn := range fns {
		r.dispatch(fn, ev, key, m.QoS > 0, m.Chain, src, d.done)
	}
}

// delivery is one message handed to its functions: it is acknowledged once all of them
// have committed. One allocation per message, where a closure over its counters was three.
type delivery struct {
	m       *mqtt.Message
	logger  *slog.Logger
	pending atomic.Int32
	failed  atomic.Bool
}

func (d *delivery) done(err error) {
	if err != nil {
		d.failed.Store(true)
		logAbandon(d.logger, "mqtt", err)
	}
	if d.pending.Add(-1) == 0 && !d.failed.Load() {
		d.m.Ack()
	}
}

// HandleReading implements sensors.Handler.
func (r *router) HandleReading(rd sensors.Reading) {
	if r.stopped.Load() {
		return
	}
	r.metrics.events.WithLabelValues("sensor").Inc()
	r.live.sensor(rd)
	fns := r.functions.routes().sensor[rd.Sensor]
	if len(fns) == 0 {
		return
	}
	ev := &luafn.Event{ID: newEventID(), Source: "sensor", TS: rd.TS.UnixMilli(), Sensor: rd.Sensor, Values: rd.Values}
	for _, fn := range fns {
		r.dispatch(fn, ev, "sensor:"+rd.Sensor, false, nil, source{}, func(error) {})
	}
}

// HandleEdge implements sensors.Handler.
func (r *router) HandleEdge(e sensors.Edge) {
	if r.stopped.Load() {
		return
	}
	r.metrics.events.WithLabelValues("gpio").Inc()
	ev := &luafn.Event{ID: newEventID(), Source: "gpio", TS: e.TS.UnixMilli(), Pin: e.Pin, Level: e.Level, Edge: e.Edge, Coalesced: e.Coalesced}
	r.live.event(ev)
	for _, fn := range r.functions.routes().gpio[e.Watch] {
		r.dispatch(fn, ev, "gpio:"+e.Pin, false, nil, source{}, func(error) {})
	}
}
