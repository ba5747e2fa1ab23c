package sensors

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// edgePin records the edge detection asked of it and counts waits.
type edgePin struct {
	*gpiotest.Pin
	mu    sync.Mutex
	edge  gpio.Edge
	waits atomic.Int64
}

func (p *edgePin) In(pull gpio.Pull, edge gpio.Edge) error {
	p.mu.Lock()
	p.edge = edge
	p.mu.Unlock()
	return p.Pin.In(pull, edge)
}

func (p *edgePin) WaitForEdge(timeout time.Duration) bool {
	p.waits.Add(1)
	return p.Pin.WaitForEdge(timeout)
}

func (p *edgePin) hwEdge() gpio.Edge {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.edge
}

func newEdgePin(name string) *edgePin { return &edgePin{Pin: newPin(name)} }

func gpioManager(t *testing.T, cfgs map[string]Config, pins map[string]gpio.PinIO, opts Options) *Manager {
	t.Helper()
	opts.Opener = &fakeOpener{pins: pins}
	if opts.EdgeTimeout == 0 {
		opts.EdgeTimeout = 20 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := New(cfgs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEdgeSelectionAndPull(t *testing.T) {
	p17, p22, p23 := newEdgePin("GPIO17"), newEdgePin("GPIO22"), newEdgePin("GPIO23")
	m := gpioManager(t, map[string]Config{
		"button": {Driver: DriverGPIO, Pin: "GPIO17", Pull: "up"},
		"door":   {Driver: DriverGPIO, Pin: "GPIO22", Pull: "down"},
		"reed":   {Driver: DriverGPIO, Pin: "GPIO23", Pull: "none"},
	}, map[string]gpio.PinIO{"GPIO17": p17, "GPIO22": p22, "GPIO23": p23}, Options{})
	if p17.P != gpio.PullUp || p22.P != gpio.PullDown || p23.P != gpio.Float {
		t.Errorf("pulls %s %s %s, want PullUp PullDown Float", p17.P, p22.P, p23.P)
	}
	falling := Watch{Pin: "button", Edge: EdgeFalling} // by sensor name
	rising22, falling22 := Watch{Pin: "GPIO22", Edge: EdgeRising}, Watch{Pin: "GPIO22", Edge: EdgeFalling}
	both := Watch{Pin: "GPIO23", Edge: EdgeBoth}
	for _, w := range []Watch{falling, rising22, falling22, both, falling} {
		if err := m.Watch(w); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel is asked for exactly the edges needed.
	if p17.hwEdge() != gpio.FallingEdge || p22.hwEdge() != gpio.BothEdges || p23.hwEdge() != gpio.BothEdges {
		t.Errorf("hardware edges %s %s %s", p17.hwEdge(), p22.hwEdge(), p23.hwEdge())
	}
	c := newCollector()
	run(t, m, c)

	p17.EdgesChan <- gpio.Low
	if e := nextEdge(t, c); e.Sensor != "button" || e.Pin != "GPIO17" || e.Edge != EdgeFalling || e.Level != 0 || e.Watch != falling || e.TS.IsZero() {
		t.Errorf("GPIO17: %+v", e)
	}
	noEdge(t, c, 50*time.Millisecond) // the duplicate Watch is one watch

	p22.EdgesChan <- gpio.High
	if e := nextEdge(t, c); e.Edge != EdgeRising || e.Level != 1 || e.Watch != rising22 {
		t.Errorf("GPIO22 up: %+v", e)
	}
	p22.EdgesChan <- gpio.Low
	if e := nextEdge(t, c); e.Edge != EdgeFalling || e.Level != 0 || e.Watch != falling22 {
		t.Errorf("GPIO22 down: %+v", e)
	}
	noEdge(t, c, 50*time.Millisecond)

	p23.EdgesChan <- gpio.High
	p23.EdgesChan <- gpio.Low
	if e := nextEdge(t, c); e.Edge != EdgeRising || e.Watch != both {
		t.Errorf("GPIO23 first: %+v", e)
	}
	if e := nextEdge(t, c); e.Edge != EdgeFalling || e.Watch != both {
		t.Errorf("GPIO23 second: %+v", e)
	}
	if st := m.Status(); st[0].Name != "button" || st[0].Edges != 1 || st[0].Values["level"] != 0 {
		t.Errorf("status %+v", st[0])
	}
}

func TestDebounce(t *testing.T) {
	const d = 150 * time.Millisecond
	p := newEdgePin("GPIO17")
	m := gpioManager(t, map[string]Config{"button": {Driver: DriverGPIO, Pin: "GPIO17", Pull: "up"}},
		map[string]gpio.PinIO{"GPIO17": p}, Options{})
	press := Watch{Pin: "GPIO17", Edge: EdgeFalling, Debounce: d}
	both := Watch{Pin: "GPIO17", Edge: EdgeBoth, Debounce: d}
	for _, w := range []Watch{press, both} {
		if err := m.Watch(w); err != nil {
			t.Fatal(err)
		}
	}
	c := newCollector()
	run(t, m, c)
	edges := func(n int) map[Watch][]Edge {
		got := map[Watch][]Edge{}
		for range n {
			e := nextEdge(t, c)
			got[e.Watch] = append(got[e.Watch], e)
		}
		noEdge(t, c, 2*d)
		return got
	}
	bounce := func(levels ...gpio.Level) {
		for _, l := range levels {
			p.EdgesChan <- l
		}
	}

	// A bouncing press: one falling edge for each watch, at the first contact.
	bounce(gpio.Low, gpio.High, gpio.Low, gpio.High, gpio.Low)
	got := edges(2)
	if len(got[press]) != 1 || got[press][0].Edge != EdgeFalling || len(got[both]) != 1 || got[both][0].Edge != EdgeFalling {
		t.Fatalf("press: %+v", got)
	}
	// A bouncing release: nothing for the press watch, one rising edge for both.
	bounce(gpio.High, gpio.Low, gpio.High)
	got = edges(1)
	if len(got[both]) != 1 || got[both][0].Edge != EdgeRising || got[both][0].Level != 1 {
		t.Fatalf("release: %+v", got)
	}
	// A short tap that ends inside the lock-out: the press is reported at
	// once and the release when the lock-out ends and the level has settled.
	bounce(gpio.Low, gpio.High)
	got = edges(3)
	if len(got[press]) != 1 || len(got[both]) != 2 || got[both][0].Edge != EdgeFalling || got[both][1].Edge != EdgeRising {
		t.Fatalf("tap: %+v", got)
	}
	if gap := got[both][1].TS.Sub(got[both][0].TS); gap < d {
		t.Errorf("release reported %s after the press, inside the %s lock-out", gap, d)
	}
	// A glitch shorter than nothing: the level is back where it was.
	bounce(gpio.High)
	noEdge(t, c, 2*d)
}

// A burst of edges that outruns a blocked handler is queued, then merged,
// and the merge is counted, so no edge vanishes without a trace.
func TestEdgeBurstCoalescedAndCounted(t *testing.T) {
	p := newPin("GPIO17")
	m := gpioManager(t, map[string]Config{"button": {Driver: DriverGPIO, Pin: "GPIO17"}},
		map[string]gpio.PinIO{"GPIO17": p}, Options{EdgeQueue: 4})
	if err := m.Watch(Watch{Pin: "GPIO17", Edge: EdgeBoth}); err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var mu sync.Mutex
	var got []Edge
	h := HandlerFuncs{Edge: func(e Edge) {
		mu.Lock()
		got = append(got, e)
		first := len(got) == 1
		mu.Unlock()
		if first {
			entered <- struct{}{}
			<-release
		}
	}}
	run(t, m, h)
	p.EdgesChan <- gpio.High
	<-entered // the handler holds the first edge
	const burst = 21
	level := gpio.High
	for range burst {
		level = !level
		p.EdgesChan <- level
	}
	// The last send returns when the watcher has the edge; give it time to
	// queue it before the handler is let go.
	time.Sleep(50 * time.Millisecond)
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n, total := len(got), 0
		for _, e := range got {
			total += 1 + e.Coalesced
		}
		mu.Unlock()
		if total == 1+burst {
			if n != 1+4 {
				t.Errorf("%d edges delivered, want the first plus a full queue of 4", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edges %+v account for %d of %d", got, total, 1+burst)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	last := got[len(got)-1]
	mu.Unlock()
	if last.Coalesced != burst-4 || last.Level != levelInt(level) {
		t.Errorf("last edge %+v: want %d coalesced and the final level %d", last, burst-4, levelInt(level))
	}
	if st := m.Status()[0]; st.Edges != 5 || st.Coalesced != burst-4 {
		t.Errorf("status %+v", st)
	}
}

// The watcher blocks in WaitForEdge: an idle pin costs one wake-up per
// EdgeTimeout, not a sampling loop.
func TestIdleWatchDoesNotSpin(t *testing.T) {
	p := newEdgePin("GPIO17")
	m := gpioManager(t, map[string]Config{"button": {Driver: DriverGPIO, Pin: "GPIO17"}},
		map[string]gpio.PinIO{"GPIO17": p}, Options{EdgeTimeout: 100 * time.Millisecond})
	if err := m.Watch(Watch{Pin: "GPIO17", Edge: EdgeFalling, Debounce: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	run(t, m, newCollector())
	time.Sleep(time.Second)
	if n := p.waits.Load(); n > 15 {
		t.Errorf("%d waits in 1s with a 100ms timeout: the watcher spins", n)
	}
}

func TestOutputs(t *testing.T) {
	relay, button := newPin("GPIO27"), newPin("GPIO17")
	m := gpioManager(t, map[string]Config{
		"relay":  {Driver: DriverGPIO, Pin: "GPIO27", Mode: ModeOut, Initial: 1},
		"button": {Driver: DriverGPIO, Pin: "GPIO17", Pull: "down", Every: 100 * time.Millisecond},
	}, map[string]gpio.PinIO{"GPIO27": relay, "GPIO17": button}, Options{})
	if relay.Read() != gpio.High {
		t.Error("initial: 1 did not drive the pin high")
	}
	if err := m.WritePin("relay", 0); err != nil {
		t.Fatal(err)
	}
	if relay.Read() != gpio.Low {
		t.Error("WritePin(relay, 0) left the pin high")
	}
	if v, err := m.ReadPin("GPIO27"); err != nil || v != 0 {
		t.Errorf("ReadPin(GPIO27) = %d, %v", v, err)
	}
	if err := m.WritePin("GPIO27", 1); err != nil || relay.Read() != gpio.High {
		t.Errorf("WritePin(GPIO27, 1): %v, level %s", err, relay.Read())
	}
	if st := m.Status()[1]; st.Name != "relay" || st.Values["level"] != 1 {
		t.Errorf("status %+v", st)
	}
	for _, c := range []struct {
		pin   string
		level int
		want  string
	}{
		{"button", 1, "gpio pin GPIO17 is not declared as an output (mode: out)"},
		{"GPIO5", 1, "gpio pin GPIO5: not declared under sensors:"},
		{"relay", 2, "level 2 is not 0 or 1"},
	} {
		if err := m.WritePin(c.pin, c.level); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("WritePin(%s, %d) = %v, want %q", c.pin, c.level, err, c.want)
		}
	}
	if _, err := m.ReadPin("GPIO5"); !errors.Is(err, ErrNotDeclared) {
		t.Errorf("ReadPin(GPIO5) = %v", err)
	}
	// An input with every: is polled for its level.
	button.Out(gpio.High)
	if v, err := m.ReadPin("button"); err != nil || v != 1 {
		t.Errorf("ReadPin(button) = %d, %v", v, err)
	}
	c := newCollector()
	run(t, m, c)
	select {
	case r := <-c.readings:
		if r.Sensor != "button" || r.Values["level"] != 1 {
			t.Errorf("reading %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("input not polled")
	}
}

func TestWatchErrors(t *testing.T) {
	m := gpioManager(t, map[string]Config{
		"relay":  {Driver: DriverGPIO, Pin: "GPIO27", Mode: ModeOut},
		"button": {Driver: DriverGPIO, Pin: "GPIO17"},
	}, map[string]gpio.PinIO{"GPIO27": newPin("GPIO27"), "GPIO17": newPin("GPIO17")}, Options{})
	for _, c := range []struct {
		w    Watch
		want string
	}{
		{Watch{Pin: "GPIO4", Edge: EdgeFalling}, "watch GPIO4:falling: gpio pin GPIO4: not declared under sensors: (e.g. button: {driver: gpio, pin: GPIO4, pull: up})"},
		{Watch{Pin: "relay"}, "gpio pin GPIO27 is an output"},
		{Watch{Pin: "button", Edge: "up"}, `edge "up" is not rising, falling or both`},
		{Watch{Pin: "button", Debounce: time.Minute}, "debounce 1m0s is not within"},
	} {
		if err := m.Watch(c.w); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Watch(%+v) = %v, want %q", c.w, err, c.want)
		}
	}
	run(t, m, newCollector())
	time.Sleep(10 * time.Millisecond) // let Run start
	if err := m.Watch(Watch{Pin: "button"}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("Watch after Run = %v", err)
	}
	if err := m.Run(context.Background(), newCollector()); err == nil {
		t.Error("second Run accepted")
	}
}

func TestSimulatedPins(t *testing.T) {
	m := gpioManager(t, map[string]Config{
		"button": {Driver: DriverGPIO, Pin: "GPIO17", Pull: "up", Sim: true},
		"relay":  {Driver: DriverGPIO, Pin: "GPIO27", Mode: ModeOut, Sim: true},
		"real":   {Driver: DriverGPIO, Pin: "GPIO22"},
	}, map[string]gpio.PinIO{"GPIO22": newPin("GPIO22")}, Options{})
	w := Watch{Pin: "button", Edge: EdgeFalling, Debounce: 50 * time.Millisecond}
	if err := m.Watch(w); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.ReadPin("button"); v != 1 {
		t.Error("pull: up did not start the simulated input high")
	}
	c := newCollector()
	run(t, m, c)
	if err := m.SimulateEdge("button", 0); err != nil {
		t.Fatal(err)
	}
	if e := nextEdge(t, c); e.Sensor != "button" || e.Edge != EdgeFalling || e.Watch != w {
		t.Errorf("edge %+v", e)
	}
	if v, _ := m.ReadPin("GPIO17"); v != 0 {
		t.Error("level did not follow SimulateEdge")
	}
	// Same level again is no edge; release is not watched.
	for _, l := range []int{0, 1} {
		if err := m.SimulateEdge("GPIO17", l); err != nil {
			t.Fatal(err)
		}
	}
	noEdge(t, c, 150*time.Millisecond)
	if err := m.SimulateEdge("button", 0); err != nil {
		t.Fatal(err)
	}
	nextEdge(t, c)

	if err := m.WritePin("relay", 1); err != nil {
		t.Fatal(err)
	}
	if v, err := m.ReadPin("relay"); v != 1 || err != nil {
		t.Errorf("sim relay reads %d, %v", v, err)
	}
	for _, c := range []struct {
		pin   string
		level int
		want  string
	}{
		{"relay", 1, "not a simulated input"},
		{"real", 1, "not a simulated input"},
		{"button", 5, "level 5 is not 0 or 1"},
		{"nope", 1, "not declared"},
	} {
		if err := m.SimulateEdge(c.pin, c.level); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SimulateEdge(%s, %d) = %v, want %q", c.pin, c.level, err, c.want)
		}
	}
}
