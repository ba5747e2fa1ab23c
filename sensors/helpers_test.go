package sensors

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
)

// fakeOpener hands out i2ctest buses and gpiotest pins by name; anything
// else is missing.
type fakeOpener struct {
	buses map[string]i2c.BusCloser
	pins  map[string]gpio.PinIO
}

func (o *fakeOpener) OpenI2C(name string) (i2c.BusCloser, error) {
	if b, ok := o.buses[name]; ok {
		return b, nil
	}
	return nil, errors.New("i2c bus " + name + " not found (fake)")
}

func (o *fakeOpener) OpenPin(name string) (gpio.PinIO, error) {
	if p, ok := o.pins[name]; ok {
		return p, nil
	}
	return nil, errors.New("gpio pin " + name + " not found (fake)")
}

// newPin returns a gpiotest pin whose edges the test drives through its
// unbuffered EdgesChan: a send returns once the watcher has taken the edge.
func newPin(name string) *gpiotest.Pin {
	return &gpiotest.Pin{N: name, EdgesChan: make(chan gpio.Level)}
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r)
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// count returns how many records had this message.
func (l *logRecorder) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if r.Message == msg {
			n++
		}
	}
	return n
}

func (l *logRecorder) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

// collector is a Handler that forwards events to channels.
type collector struct {
	readings chan Reading
	edges    chan Edge
}

func newCollector() *collector {
	return &collector{readings: make(chan Reading, 1000), edges: make(chan Edge, 1000)}
}

func (c *collector) HandleReading(r Reading) { c.readings <- r }
func (c *collector) HandleEdge(e Edge)       { c.edges <- e }

// run starts m.Run and stops it when the test ends, failing the test if
// Run does not return.
func run(t *testing.T, m *Manager, h Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, h) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// nextEdge waits for one edge.
func nextEdge(t *testing.T, c *collector) Edge {
	t.Helper()
	select {
	case e := <-c.edges:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no edge within 10s")
	}
	return Edge{}
}

// noEdge checks that no edge arrives for a while.
func noEdge(t *testing.T, c *collector, d time.Duration) {
	t.Helper()
	select {
	case e := <-c.edges:
		t.Fatalf("unexpected edge %+v", e)
	case <-time.After(d):
	}
}

// drive advances a fake clock in steps, each once the poll goroutines are
// waiting on it, until done reports true or limit of virtual time passed.
func drive(t *testing.T, fc *clockwork.FakeClock, waiters int, step, limit time.Duration, done func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for elapsed := time.Duration(0); elapsed < limit; elapsed += step {
		if done() {
			return
		}
		if err := fc.BlockUntilContext(ctx, waiters); err != nil {
			t.Fatalf("after %s of virtual time, the manager stopped waiting on the clock", elapsed)
		}
		fc.Advance(step)
	}
	if !done() {
		t.Fatalf("not done after %s of virtual time", limit)
	}
}

// playback returns an i2ctest bus that errors instead of panicking, so a
// driver bug shows up as a failed reading.
func playback(ops ...i2ctest.IO) *i2ctest.Playback {
	return &i2ctest.Playback{Ops: ops, DontPanic: true}
}
