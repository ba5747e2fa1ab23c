package sensors

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/conn/v3/pin"
)

// simEdgeBuffer is how many simulated edges may wait for the watcher.
const simEdgeBuffer = 64

// errSimQueueFull is returned when SimulateEdge outruns the watcher.
var errSimQueueFull = errors.New("simulated edge queue full")

// simPin is an in-memory gpio.PinIO for pins declared with sim: true. An
// input changes only through set, which also queues an edge for
// WaitForEdge; an output just remembers its level. It lets button and relay
// logic run on a laptop through the same watcher code as real pins.
type simPin struct {
	name  string
	edges chan gpio.Level

	mu    sync.Mutex
	level gpio.Level
	edge  gpio.Edge // the edges In asked for
}

func newSimPin(name string) *simPin {
	return &simPin{name: name, edges: make(chan gpio.Level, simEdgeBuffer)}
}

// set drives the simulated input to l, as a button or sensor would.
func (p *simPin) set(l gpio.Level) error {
	select {
	case p.edges <- l:
		return nil
	default:
		return fmt.Errorf("pin %s: %w", p.name, errSimQueueFull)
	}
}

func (p *simPin) String() string   { return p.name + "(sim)" }
func (p *simPin) Halt() error      { return nil }
func (p *simPin) Name() string     { return p.name }
func (p *simPin) Number() int      { return -1 }
func (p *simPin) Function() string { return "sim" }

func (p *simPin) In(pull gpio.Pull, edge gpio.Edge) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch pull {
	case gpio.PullUp:
		p.level = gpio.High
	case gpio.PullDown:
		p.level = gpio.Low
	}
	p.edge = edge
	return nil
}

func (p *simPin) Read() gpio.Level {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.level
}

// WaitForEdge waits for a level change that matches the edges asked for
// in In; like hardware, setting the level it already has is no edge.
func (p *simPin) WaitForEdge(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l := <-p.edges:
			p.mu.Lock()
			changed := l != p.level
			p.level = l
			want := p.edge == gpio.BothEdges || (l == gpio.High && p.edge == gpio.RisingEdge) || (l == gpio.Low && p.edge == gpio.FallingEdge)
			p.mu.Unlock()
			if changed && want {
				return true
			}
		case <-t.C:
			return false
		}
	}
}

func (p *simPin) Pull() gpio.Pull        { return gpio.PullNoChange }
func (p *simPin) DefaultPull() gpio.Pull { return gpio.PullNoChange }

func (p *simPin) Out(l gpio.Level) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.level = l
	return nil
}

func (p *simPin) PWM(gpio.Duty, physic.Frequency) error {
	return errors.New("sim pin: PWM not supported")
}

var (
	_ gpio.PinIO = (*simPin)(nil)
	_ pin.Pin    = (*simPin)(nil)
)
