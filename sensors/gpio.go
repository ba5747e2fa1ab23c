package sensors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// pinState is one declared pin. Fields other than mu's are set by New.
type pinState struct {
	sensor *sensor
	name   string
	out    bool
	pull   gpio.Pull
	pin    gpio.PinIO // nil when the hardware is missing
	sim    *simPin    // non-nil for sim: true

	mu       sync.Mutex // serialises writes; guards outLevel
	outLevel int

	// watches is appended to by Watch before Run, then read-only.
	watches []*watch
}

// watch is one Watch on a pin: its debounce state, owned by the pin's
// watcher goroutine, and its queue to the dispatcher goroutine.
type watch struct {
	w    Watch
	kind gpio.Edge

	stable    gpio.Level // the debounced level
	locked    bool       // ignoring changes until lockUntil
	lockUntil time.Time

	q edgeQueue
}

// lookupPin finds a declared pin by pin name or by its sensor's name.
func (m *Manager) lookupPin(name string) (*pinState, error) {
	if s, ok := m.sensors[name]; ok && s.cfg.Driver == DriverGPIO {
		return m.pins[s.cfg.Pin], nil
	}
	if ps, ok := m.pins[name]; ok {
		return ps, nil
	}
	return nil, fmt.Errorf("gpio pin %s: %w under sensors: (e.g. button: {driver: gpio, pin: %s, pull: up})", name, ErrNotDeclared, name)
}

// missing returns the error that kept ps's hardware from opening.
func (ps *pinState) missing() error {
	ps.sensor.mu.Lock()
	defer ps.sensor.mu.Unlock()
	return fmt.Errorf("gpio pin %s is not available: %s", ps.name, ps.sensor.st.LastError)
}

// Watch starts edge detection for a gpio: trigger. The pin must be a
// declared input. Watching the same Watch twice is one watch. Call it
// before Run.
func (m *Manager) Watch(w Watch) error {
	kind, err := w.edge()
	if err != nil {
		return fmt.Errorf("watch %s: %w", w, err)
	}
	ps, err := m.lookupPin(w.Pin)
	if err != nil {
		return fmt.Errorf("watch %s: %w", w, err)
	}
	if ps.out {
		return fmt.Errorf("watch %s: gpio pin %s is an output (mode: out)", w, ps.name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		return fmt.Errorf("watch %s: the manager is already running", w)
	}
	for _, x := range ps.watches {
		if x.w == w {
			return nil
		}
	}
	ps.watches = append(ps.watches, &watch{w: w, kind: kind, q: newEdgeQueue(m.edgeQueue)})
	if ps.pin == nil {
		return nil // missing hardware, allowed: Status says why it never fires
	}
	if err := ps.pin.In(ps.pull, ps.hwEdge()); err != nil {
		return fmt.Errorf("watch %s: gpio pin %s: enable edge detection: %w", w, ps.name, err)
	}
	return nil
}

// hwEdge is the edge detection asked of the hardware: exactly the watched
// edge when every watch wants the same one undebounced, else both, which
// debouncing needs to see the level settle.
func (ps *pinState) hwEdge() gpio.Edge {
	e := ps.watches[0].kind
	for _, w := range ps.watches {
		if w.kind != e || w.w.Debounce > 0 {
			return gpio.BothEdges
		}
	}
	return e
}

// watchPin waits for edges on ps, which blocks in the kernel (the GPIO
// character device's line events, or sysfs edge polling) rather than
// sampling the pin, and feeds them to the pin's watches.
func (m *Manager) watchPin(ctx context.Context, ps *pinState) {
	hw := ps.hwEdge()
	level := ps.pin.Read()
	for _, w := range ps.watches {
		w.stable = level
	}
	for ctx.Err() == nil {
		timeout := m.edgeTimeout
		now := m.clock.Now()
		for _, w := range ps.watches {
			if w.locked {
				timeout = max(min(timeout, w.lockUntil.Sub(now)), time.Millisecond)
			}
		}
		got := ps.pin.WaitForEdge(timeout)
		now = m.clock.Now()
		if got {
			lvl := edgeLevel(hw, ps.pin)
			for _, w := range ps.watches {
				if l, ok := w.edge(now, lvl); ok {
					w.q.push(m.newEdge(ps, w, l, now))
				}
			}
		}
		for _, w := range ps.watches {
			if l, ok := w.settle(now, ps.pin.Read); ok {
				w.q.push(m.newEdge(ps, w, l, now))
			}
		}
	}
}

// edgeLevel is the level an edge left the pin at. The wait does not say
// which edge it saw; with both edges enabled the level now does, unless the
// pin has already changed again, in which case the next wait returns at
// once for that change.
func edgeLevel(hw gpio.Edge, p gpio.PinIn) gpio.Level {
	switch hw {
	case gpio.RisingEdge:
		return gpio.High
	case gpio.FallingEdge:
		return gpio.Low
	}
	return p.Read()
}

// edge handles one edge seen at now that left the pin at lvl.
func (w *watch) edge(now time.Time, lvl gpio.Level) (gpio.Level, bool) {
	if w.w.Debounce == 0 {
		return lvl, w.wants(lvl)
	}
	if w.locked && now.Before(w.lockUntil) {
		return lvl, false // a bounce
	}
	w.locked = false
	return w.change(now, lvl)
}

// settle ends an expired lock-out: if the pin settled at a level other
// than the one last reported (the button was released while it bounced),
// that is an edge too.
func (w *watch) settle(now time.Time, read func() gpio.Level) (gpio.Level, bool) {
	if !w.locked || now.Before(w.lockUntil) {
		return gpio.Low, false
	}
	w.locked = false
	return w.change(now, read())
}

// change reports lvl if it differs from the debounced level, and starts a
// lock-out: the first edge of a bounce goes out at once, the rest are
// ignored.
func (w *watch) change(now time.Time, lvl gpio.Level) (gpio.Level, bool) {
	if lvl == w.stable {
		return lvl, false
	}
	w.stable = lvl
	w.locked = true
	w.lockUntil = now.Add(w.w.Debounce)
	return lvl, w.wants(lvl)
}

func (w *watch) wants(lvl gpio.Level) bool {
	return w.kind == gpio.BothEdges || (lvl == gpio.High) == (w.kind == gpio.RisingEdge)
}

func (m *Manager) newEdge(ps *pinState, w *watch, lvl gpio.Level, ts time.Time) Edge {
	e := Edge{Sensor: ps.sensor.name, Pin: ps.name, Level: levelInt(lvl), Edge: EdgeFalling, TS: ts, Watch: w.w}
	if lvl {
		e.Edge = EdgeRising
	}
	return e
}

// dispatch hands w's queued edges to h, one at a time and in order, so a
// slow handler never blocks the watcher.
func (m *Manager) dispatch(ctx context.Context, ps *pinState, w *watch, h Handler) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.q.ready:
		}
		for ctx.Err() == nil {
			e, ok := w.q.pop()
			if !ok {
				break
			}
			h.HandleEdge(e)
			s := ps.sensor
			s.mu.Lock()
			s.st.Edges++
			s.st.Coalesced += uint64(e.Coalesced)
			s.st.Values = map[string]float64{"level": float64(e.Level)}
			s.st.LastReading = e.TS
			s.mu.Unlock()
		}
	}
}

// edgeQueue is a bounded FIFO of edges. When full, a new edge replaces the
// newest queued one and carries the count of edges it absorbed, so a burst
// that outruns the handler ends in the right state and says how much it
// skipped.
type edgeQueue struct {
	mu    sync.Mutex
	buf   []Edge
	max   int
	ready chan struct{} // signalled after each push
}

func newEdgeQueue(n int) edgeQueue {
	return edgeQueue{max: n, ready: make(chan struct{}, 1)}
}

func (q *edgeQueue) push(e Edge) {
	q.mu.Lock()
	if n := len(q.buf); n >= q.max {
		e.Coalesced += q.buf[n-1].Coalesced + 1
		q.buf[n-1] = e
	} else {
		q.buf = append(q.buf, e)
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *edgeQueue) pop() (Edge, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.buf) == 0 {
		return Edge{}, false
	}
	e := q.buf[0]
	q.buf = q.buf[1:]
	if len(q.buf) == 0 {
		q.buf = nil // let the backing array go after a burst
	}
	return e, true
}

// WritePin sets a declared output pin (by pin or sensor name) to level 0
// or 1. The gateway calls it after the invocation that asked has committed.
func (m *Manager) WritePin(name string, level int) error {
	ps, err := m.lookupPin(name)
	if err != nil {
		return err
	}
	if !ps.out {
		return fmt.Errorf("gpio pin %s is not declared as an output (mode: out)", ps.name)
	}
	if level != 0 && level != 1 {
		return fmt.Errorf("gpio pin %s: level %d is not 0 or 1", ps.name, level)
	}
	if ps.pin == nil {
		return ps.missing()
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := ps.pin.Out(level == 1); err != nil {
		return fmt.Errorf("gpio pin %s: write: %w", ps.name, err)
	}
	ps.outLevel = level
	s := ps.sensor
	s.mu.Lock()
	s.st.Values = map[string]float64{"level": float64(level)}
	s.st.LastReading = m.clock.Now()
	s.mu.Unlock()
	return nil
}

// ReadPin returns the level of a declared pin: an input's current level,
// or the level last written to an output.
func (m *Manager) ReadPin(name string) (int, error) {
	ps, err := m.lookupPin(name)
	if err != nil {
		return 0, err
	}
	if ps.pin == nil {
		return 0, ps.missing()
	}
	if ps.out {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		return ps.outLevel, nil
	}
	return levelInt(ps.pin.Read()), nil
}

// SimulateEdge drives a simulated input (driver gpio, sim: true) to level,
// as the console's button or the API does. The change goes through the
// same edge detection and debouncing as a real pin's.
func (m *Manager) SimulateEdge(name string, level int) error {
	ps, err := m.lookupPin(name)
	if err != nil {
		return err
	}
	if ps.sim == nil || ps.out {
		return fmt.Errorf("gpio pin %s is not a simulated input (driver: gpio, sim: true)", ps.name)
	}
	if level != 0 && level != 1 {
		return fmt.Errorf("gpio pin %s: level %d is not 0 or 1", ps.name, level)
	}
	return ps.sim.set(level == 1)
}

// ErrNotDeclared reports a pin that no sensor declares; errors.Is works on
// the errors of WritePin, ReadPin and SimulateEdge.
var ErrNotDeclared = errors.New("not declared")
