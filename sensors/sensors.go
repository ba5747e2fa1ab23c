// Package sensors connects Moongate functions to the physical world: GPIO
// edges as triggers and GPIO outputs for gpio.write, I²C and 1-Wire sensor
// drivers polled on a schedule, and simulated sensors and pins for running
// without hardware.
//
// The Manager owns the hardware. The gateway builds it from the sensors:
// section of moongate.yaml with New, registers the gpio: triggers with
// Watch, and calls Run with a Handler that turns Readings and Edges into
// function events:
//
//	m, err := sensors.New(cfg.Sensors, sensors.Options{Logger: log})
//	if err != nil { ... }          // missing hardware, bad config
//	defer m.Close()
//	w, _ := sensors.ParseWatch("GPIO17:falling:50ms")
//	if err := m.Watch(w); err != nil { ... }
//	go m.Run(ctx, router)          // returns once ctx is done
//
// Drivers live in sub-packages (bmx280, sht3x, ads1115, bh1750, ds18b20) and
// take an i2c.Bus or a file system; only the Manager opens hardware, through
// an Opener, so tests run on periph's i2ctest and gpiotest fakes.
package sensors

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"

	"github.com/moongate/moongate/internal/logkey"
)

// W1Devices is where the kernel lists 1-Wire devices.
const W1Devices = "/sys/bus/w1/devices"

// Options configures a Manager. The zero value uses the host's hardware,
// the real clock and slog.Default.
type Options struct {
	// AllowMissingHardware lets New succeed when a bus, pin or device cannot
	// be opened: the sensor reports the error in Status and is retried with
	// backoff, and the rest runs. Otherwise New fails naming every missing
	// piece.
	AllowMissingHardware bool

	// Logger receives the few events worth a line: a sensor starting to
	// fail or recovering, missing hardware. Nil means slog.Default().
	Logger *slog.Logger

	// Opener opens I²C buses and GPIO pins. Nil means a HostOpener.
	Opener Opener

	// W1 is the kernel's 1-Wire device directory. Nil means W1Devices.
	W1 fs.FS

	// Clock is the time source for polling, debouncing, sim values and
	// timestamps. Nil means the real clock.
	Clock Clock

	// Rand seeds poll jitter and sim noise. Nil means a random seed.
	Rand *rand.Rand

	// EdgeQueue is how many edges of one watch may wait for a busy handler
	// before further ones are coalesced into the newest. Zero means 16.
	EdgeQueue int

	// EdgeTimeout bounds each wait for an edge, so a watcher notices
	// shutdown: Run returns at most this long after its context is done.
	// A waiting watcher costs nothing; waking once per timeout is noise.
	// Zero means one second.
	EdgeTimeout time.Duration
}

// Manager polls sensors and watches pins. Its methods are safe for
// concurrent use.
type Manager struct {
	log          *slog.Logger
	opener       Opener
	w1           fs.FS
	clock        Clock
	start        time.Time
	allowMissing bool
	edgeQueue    int
	edgeTimeout  time.Duration

	names   []string // sorted
	sensors map[string]*sensor
	pins    map[string]*pinState // by pin name

	busMu sync.Mutex
	buses map[string]*i2cBus

	mu      sync.Mutex // guards running and the watch lists
	running bool
	// stopping is Run's ctx.Done(), set before Run starts its goroutines;
	// nil (never ready) before.
	stopping <-chan struct{}
}

// sensor is one configured entry. The fields above mu are set by New, or
// only ever touched by the sensor's poll goroutine.
type sensor struct {
	name     string
	cfg      Config
	rand     *rand.Rand
	hardware bool    // reads cross a bus and are retried on error
	bus      *i2cBus // nil for non-I²C drivers
	read     func() (map[string]float64, error)

	mu       sync.Mutex
	st       SensorStatus
	reported bool // the current failure streak has been logged
}

// i2cBus is an open bus shared by the sensors on it.
type i2cBus struct {
	// mu serialises drivers: one reading is several transfers (start a
	// conversion, wait, read) that another driver must not interleave with.
	mu  sync.Mutex
	bus i2c.BusCloser
}

// Sensor states in SensorStatus.
const (
	StateStarting = "starting" // not read yet
	StateOK       = "ok"
	StateFailing  = "failing" // the last polls failed; still polling on schedule
	StateBackoff  = "backoff" // failed FailThreshold times in a row; polled less often
	StateMissing  = "missing" // hardware could not be opened
)

// SensorStatus is a snapshot of one sensor for the status API and console.
type SensorStatus struct {
	Name                string             `json:"name"`
	Driver              string             `json:"driver"`
	Pin                 string             `json:"pin,omitempty"`
	State               string             `json:"state"`
	Values              map[string]float64 `json:"values,omitempty"`
	LastReading         time.Time          `json:"last_reading,omitzero"`
	Reads               uint64             `json:"reads"`
	Errors              uint64             `json:"errors"`  // failed attempts, retries included
	Retries             uint64             `json:"retries"` // attempts repeated after a bus error
	ConsecutiveFailures int                `json:"consecutive_failures"`
	LastError           string             `json:"last_error,omitempty"`
	NextPoll            time.Time          `json:"next_poll,omitzero"`
	Edges               uint64             `json:"edges,omitempty"`     // delivered to the handler
	Coalesced           uint64             `json:"coalesced,omitempty"` // merged because the handler fell behind
}

// SensorError is a problem with one sensor of a set; Err may join several.
type SensorError struct {
	Sensor string
	Err    error
}

func (e *SensorError) Error() string { return "sensor " + e.Sensor + ": " + e.Err.Error() }
func (e *SensorError) Unwrap() error { return e.Err }

// Check refuses cfgs for every reason New would before it touches hardware: each
// config's Validate, and a pin used by two sensors. It returns nil or errors.Join of
// *SensorError values.
func Check(cfgs map[string]Config) error {
	var errs []error
	pinOwner := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(cfgs)) {
		c := cfgs[name]
		if err := c.Validate(); err != nil {
			errs = append(errs, &SensorError{Sensor: name, Err: err})
			continue
		}
		if c.Driver == DriverGPIO {
			if other, ok := pinOwner[c.Pin]; ok {
				errs = append(errs, &SensorError{Sensor: name, Err: fmt.Errorf("pin %s is already used by sensor %s", c.Pin, other)})
			}
			pinOwner[c.Pin] = name
		}
	}
	return errors.Join(errs...)
}

// New validates cfgs (every error at once, each prefixed with "sensor
// NAME: ") and opens the hardware. See Options.AllowMissingHardware.
func New(cfgs map[string]Config, opts Options) (*Manager, error) {
	m := &Manager{
		log:          opts.Logger,
		opener:       opts.Opener,
		w1:           opts.W1,
		clock:        opts.Clock,
		allowMissing: opts.AllowMissingHardware,
		edgeQueue:    opts.EdgeQueue,
		edgeTimeout:  opts.EdgeTimeout,
		sensors:      make(map[string]*sensor, len(cfgs)),
		pins:         map[string]*pinState{},
		buses:        map[string]*i2cBus{},
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.opener == nil {
		m.opener = &HostOpener{}
	}
	if m.w1 == nil {
		m.w1 = os.DirFS(W1Devices)
	}
	if m.clock == nil {
		m.clock = realClock{}
	}
	if m.edgeQueue <= 0 {
		m.edgeQueue = 16
	}
	if m.edgeTimeout <= 0 {
		m.edgeTimeout = time.Second
	}
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	m.start = m.clock.Now()

	m.names = slices.Sorted(maps.Keys(cfgs))
	if err := Check(cfgs); err != nil {
		return nil, err
	}
	var errs []error
	for _, name := range m.names {
		c := cfgs[name]
		s := &sensor{
			name: name,
			cfg:  c,
			// Each sensor gets its own source: *rand.Rand is not safe for
			// concurrent use, and a sensor's draws happen on its goroutine.
			rand:     rand.New(rand.NewPCG(rnd.Uint64(), rnd.Uint64())),
			hardware: c.Driver != DriverSim && c.Driver != DriverGPIO,
			st:       SensorStatus{Name: name, Driver: c.Driver, Pin: c.Pin, State: StateStarting},
		}
		m.sensors[name] = s
		if c.Driver == DriverGPIO {
			pull, _ := parsePull(c.Pull) // validated above
			m.pins[c.Pin] = &pinState{sensor: s, name: c.Pin, out: c.isOutput(), pull: pull}
		}
		if err := m.open(s); err != nil {
			err = fmt.Errorf("sensor %s: %w", name, err)
			if !m.allowMissing {
				errs = append(errs, err)
				continue
			}
			m.log.Warn("sensor hardware missing; running without it", logkey.Sensor, name, logkey.Driver, c.Driver, logkey.Err, err)
			s.mu.Lock()
			s.st.State = StateMissing
			s.st.LastError = err.Error()
			// Start in backoff, already reported: the retries of a missing
			// sensor are not news.
			s.st.ConsecutiveFailures = failThreshold
			s.reported = true
			s.mu.Unlock()
			continue
		}
		if c.Driver == DriverGPIO {
			s.st.State = StateOK
		}
	}
	if err := errors.Join(errs...); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Close releases the buses. Call it after Run has returned.
func (m *Manager) Close() error {
	m.busMu.Lock()
	defer m.busMu.Unlock()
	var errs []error
	for name, b := range m.buses {
		if err := b.bus.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close i2c bus %s: %w", name, err))
		}
	}
	clear(m.buses)
	for _, ps := range m.pins {
		if ps.pin != nil && !ps.out {
			// Return inputs to an inert state; outputs keep their level so a
			// restart does not click every relay.
			if err := ps.pin.Halt(); err != nil {
				errs = append(errs, fmt.Errorf("halt gpio pin %s: %w", ps.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Status returns a snapshot of every sensor, sorted by name.
func (m *Manager) Status() []SensorStatus {
	out := make([]SensorStatus, 0, len(m.names))
	for _, name := range m.names {
		s := m.sensors[name]
		s.mu.Lock()
		st := s.st
		st.Values = maps.Clone(s.st.Values)
		s.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// Run polls the sensors and watches the pins until ctx is done, then waits
// for its goroutines and returns nil. It may be called once; call Watch
// before it.
func (m *Manager) Run(ctx context.Context, h Handler) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("sensors: Run called twice")
	}
	m.running = true
	m.stopping = ctx.Done()
	m.mu.Unlock()

	var wg sync.WaitGroup
	for _, name := range m.names {
		s := m.sensors[name]
		if s.cfg.every() > 0 && (s.cfg.Driver != DriverGPIO || m.pins[s.cfg.Pin].pin != nil) {
			wg.Go(func() { m.poll(ctx, s, h) })
		}
	}
	for _, ps := range m.pins {
		if len(ps.watches) == 0 || ps.pin == nil {
			continue
		}
		wg.Go(func() { m.watchPin(ctx, ps) })
		for _, w := range ps.watches {
			wg.Go(func() { m.dispatch(ctx, ps, w, h) })
		}
	}
	wg.Wait()
	return nil
}

func levelInt(l gpio.Level) int {
	if l {
		return 1
	}
	return 0
}
