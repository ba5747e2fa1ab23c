package sensors

import (
	"fmt"
	"strings"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// Reading is one successful poll of a sensor.
type Reading struct {
	Sensor string             `json:"sensor"`
	Values map[string]float64 `json:"values"` // owned by the receiver
	TS     time.Time          `json:"ts"`
}

// Edge is one debounced edge on a watched input pin.
type Edge struct {
	Sensor string    `json:"sensor"` // the gpio sensor's name
	Pin    string    `json:"pin"`
	Level  int       `json:"level"` // level after the edge: 0 or 1
	Edge   string    `json:"edge"`  // EdgeRising or EdgeFalling
	TS     time.Time `json:"ts"`    // when the watcher saw the edge
	// Coalesced counts the edges merged into this one because the handler
	// fell behind; 0 normally. This edge is the newest of them.
	Coalesced int `json:"coalesced,omitempty"`
	// Watch is the watch, as given to Manager.Watch, that this edge
	// satisfies; the gateway routes on it.
	Watch Watch `json:"-"`
}

// Handler receives the Manager's events. Methods are called from several
// goroutines at once, but in order for any one sensor or watch. A slow
// HandleEdge makes later edges of that watch queue and then coalesce; a
// slow HandleReading delays that sensor's next poll. Both must return
// promptly once Run's context is done, or Run cannot return.
type Handler interface {
	HandleReading(Reading)
	HandleEdge(Edge)
}

// HandlerFuncs adapts two functions to a Handler; a nil one drops its events.
type HandlerFuncs struct {
	Reading func(Reading)
	Edge    func(Edge)
}

func (h HandlerFuncs) HandleReading(r Reading) {
	if h.Reading != nil {
		h.Reading(r)
	}
}

func (h HandlerFuncs) HandleEdge(e Edge) {
	if h.Edge != nil {
		h.Edge(e)
	}
}

// Edge kinds.
const (
	EdgeRising  = "rising"
	EdgeFalling = "falling"
	EdgeBoth    = "both"
)

// Watch asks for edges on an input pin, from a trigger such as
// gpio:GPIO17:falling:50ms.
type Watch struct {
	Pin      string        // pin name (GPIO17) or the name of its gpio sensor
	Edge     string        // EdgeRising, EdgeFalling or EdgeBoth; empty means both
	Debounce time.Duration // ignore further changes for this long after an edge; 0 is off
}

// MaxDebounce bounds Watch.Debounce; longer than this is surely a typo.
const MaxDebounce = 10 * time.Second

// ParseWatch parses the part of a gpio trigger after "gpio:":
// PIN[:EDGE[:DEBOUNCE]], e.g. "GPIO17:falling:50ms".
func ParseWatch(s string) (Watch, error) {
	parts := strings.Split(s, ":")
	if len(parts) > 3 || parts[0] == "" {
		return Watch{}, fmt.Errorf("gpio trigger %q: want PIN[:rising|falling|both[:DEBOUNCE]]", s)
	}
	w := Watch{Pin: parts[0], Edge: EdgeBoth}
	if len(parts) > 1 {
		w.Edge = parts[1]
	}
	if len(parts) > 2 {
		d, err := time.ParseDuration(parts[2])
		if err != nil {
			return Watch{}, fmt.Errorf("gpio trigger %q: debounce: %w", s, err)
		}
		w.Debounce = d
	}
	if _, err := w.edge(); err != nil {
		return Watch{}, fmt.Errorf("gpio trigger %q: %w", s, err)
	}
	return w, nil
}

// String formats w as ParseWatch reads it.
func (w Watch) String() string {
	s := w.Pin + ":" + w.Edge
	if w.Edge == "" {
		s += EdgeBoth
	}
	if w.Debounce > 0 {
		s += ":" + w.Debounce.String()
	}
	return s
}

func (w Watch) edge() (gpio.Edge, error) {
	if w.Debounce < 0 || w.Debounce > MaxDebounce {
		return gpio.NoEdge, fmt.Errorf("debounce %s is not within 0..%s", w.Debounce, MaxDebounce)
	}
	switch w.Edge {
	case EdgeRising:
		return gpio.RisingEdge, nil
	case EdgeFalling:
		return gpio.FallingEdge, nil
	case EdgeBoth, "":
		return gpio.BothEdges, nil
	}
	return gpio.NoEdge, fmt.Errorf("edge %q is not rising, falling or both", w.Edge)
}

func parsePull(s string) (gpio.Pull, error) {
	switch s {
	case "":
		return gpio.PullNoChange, nil
	case "up":
		return gpio.PullUp, nil
	case "down":
		return gpio.PullDown, nil
	case "none":
		return gpio.Float, nil
	}
	return gpio.PullNoChange, fmt.Errorf("%q is not up, down or none", s)
}
