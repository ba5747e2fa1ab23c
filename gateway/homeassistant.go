package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/gateway/homeassistant"
	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sensors"
)

// The gateway's own topics (SPEC §9), under moongate/ so that no device can publish on
// them unless an ACL rule names them.
func presenceTopic(gw string) string { return "moongate/" + homeassistant.Slug(gw) + "/status" }
func sensorTopic(gw, sensor string) string {
	return "moongate/" + homeassistant.Slug(gw) + "/sensors/" + homeassistant.Slug(sensor)
}
func pinTopic(gw, sensor string) string {
	return "moongate/" + homeassistant.Slug(gw) + "/gpio/" + homeassistant.Slug(sensor)
}
func pinCommandFilter(gw string) string { return "moongate/" + homeassistant.Slug(gw) + "/gpio/+/set" }

// presence is the gateway's availability topic, published when Home Assistant discovery
// is on (the entities' availability reads it); nil otherwise.
func presence(cfg *config.Config) *mqtt.Presence {
	if !cfg.HomeAssistant.Discovery {
		return nil
	}
	return &mqtt.Presence{Topic: presenceTopic(cfg.Gateway.ID),
		Online: []byte(homeassistant.Online), Offline: []byte(homeassistant.Offline)}
}

// valueKind is what Home Assistant knows of a reading by its value name.
type valueKind struct{ class, unit string }

// valueKinds are the value names the drivers report (sensors.Config.ValueNames); a sim
// sensor's value of the same name is taken for the same kind.
var valueKinds = map[string]valueKind{
	"temp":     {"temperature", "°C"},
	"humidity": {"humidity", "%"},
	"pressure": {"pressure", "hPa"},
	"lux":      {"illuminance", "lx"},
	"a0":       {"voltage", "V"}, "a1": {"voltage", "V"}, "a2": {"voltage", "V"}, "a3": {"voltage", "V"},
}

// Pin states and commands, as Home Assistant sends and reads them.
const (
	pinOn  = "1"
	pinOff = "0"
)

// homeAssistant announces the sensors, pins and declared function outputs to Home
// Assistant (homeassistant.discovery), publishes the sensors' readings and the pins'
// levels on their state topics, and drives output pins on their command topics. A nil
// *homeAssistant (discovery off) passes everything through unchanged.
type homeAssistant struct {
	gw        string
	ann       *homeassistant.Announcer
	bus       mqttPublisher
	sensors   map[string]sensors.Config
	outputs   map[string][]config.Output // function name -> its config entry's outputs
	functions func() []*version          // the active ones
	pins      pinIO
	watches   map[sensors.Watch]bool // the watches whose edges are the inputs' states
	logger    *slog.Logger
	kick      chan struct{} // the functions changed: announce again
}

type pinIO interface {
	WritePin(pin string, level int) error
	ReadPin(pin string) (int, error)
}

func newHomeAssistant(cfg *config.Config, version string, bus mqttPublisher, cfgs map[string]sensors.Config,
	pins pinIO, functions func() []*version, logger *slog.Logger) *homeAssistant {
	if !cfg.HomeAssistant.Discovery {
		return nil
	}
	h := &homeAssistant{gw: cfg.Gateway.ID, bus: bus, sensors: cfgs, outputs: map[string][]config.Output{},
		functions: functions, pins: pins, watches: map[sensors.Watch]bool{},
		logger: logger.With(logkey.Component, "homeassistant"), kick: make(chan struct{}, 1),
		ann: &homeassistant.Announcer{Prefix: cfg.HomeAssistant.Prefix, PresenceTopic: presenceTopic(cfg.Gateway.ID),
			Device: homeassistant.Device{ID: cfg.Gateway.ID, Version: version}, Pub: bus}}
	for _, f := range cfg.Functions {
		h.outputs[f.Name] = f.Outputs
	}
	return h
}

// entities are what Home Assistant is told of now: each value of each sensor, each gpio
// pin (inputs as binary sensors, outputs as switches) and each declared output of each
// active function.
func (h *homeAssistant) entities() []homeassistant.Entity {
	var out []homeassistant.Entity
	names := make([]string, 0, len(h.sensors))
	for n := range h.sensors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		sc := h.sensors[name]
		if sc.Driver == sensors.DriverGPIO {
			e := homeassistant.Entity{Component: homeassistant.BinarySensor, ObjectID: name, Name: name,
				StateTopic: pinTopic(h.gw, name), PayloadOn: pinOn, PayloadOff: pinOff}
			if sc.Mode == sensors.ModeOut {
				e.Component, e.CommandTopic = homeassistant.Switch, pinTopic(h.gw, name)+"/set"
			}
			out = append(out, e)
			continue
		}
		for _, v := range sc.ValueNames() {
			k := valueKinds[v]
			out = append(out, homeassistant.Entity{Component: homeassistant.Sensor, ObjectID: name + "_" + v,
				Name: name + " " + v, StateTopic: sensorTopic(h.gw, name), ValueTemplate: "{{ value_json." + v + " }}",
				DeviceClass: k.class, Unit: k.unit, StateClass: "measurement"})
		}
	}
	for _, v := range h.functions() {
		for _, o := range h.outputs[v.name] {
			name := o.Name
			if name == "" {
				name = o.Topic
			}
			e := homeassistant.Entity{Component: o.Component, ObjectID: "fn_" + v.name + "_" + o.Topic, Name: name,
				StateTopic: o.Topic, ValueTemplate: o.ValueTemplate, DeviceClass: o.DeviceClass, Unit: o.Unit}
			if e.Component == "" {
				e.Component = config.OutputSensor
			}
			if e.Component == config.OutputSensor {
				e.StateClass = "measurement"
			}
			out = append(out, e)
		}
	}
	return out
}

// watchInputs asks for the edges of every gpio input, whose levels are the binary
// sensors' states; call it before the sensors run.
func (h *homeAssistant) watchInputs(watch func(sensors.Watch) error) error {
	if h == nil {
		return nil
	}
	for name, sc := range h.sensors {
		if sc.Driver != sensors.DriverGPIO || sc.Mode == sensors.ModeOut {
			continue
		}
		w := sensors.Watch{Pin: name, Edge: sensors.EdgeBoth}
		if err := watch(w); err != nil {
			return fmt.Errorf("homeassistant: %w", err)
		}
		h.watches[w] = true
	}
	return nil
}

// run announces at start, and again whenever the functions change or Home Assistant
// comes back, until ctx ends.
func (h *homeAssistant) run(ctx context.Context) {
	for {
		h.announce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
		}
	}
}

// announce sends what changed of the entities, and every pin's level (the readings send
// themselves at the next poll).
func (h *homeAssistant) announce(ctx context.Context) {
	if err := h.ann.Announce(ctx, h.entities()); err != nil && ctx.Err() == nil {
		h.logger.Warn("announce to Home Assistant", logkey.Err, err)
	}
	for name, sc := range h.sensors {
		if sc.Driver != sensors.DriverGPIO {
			continue
		}
		if level, err := h.pins.ReadPin(name); err == nil {
			h.publishPin(name, level)
		}
	}
}

// functionsChanged is the registry's news of a deploy or a delete.
func (h *homeAssistant) functionsChanged() {
	if h == nil {
		return
	}
	h.again()
}

// again asks run to announce.
func (h *homeAssistant) again() {
	select {
	case h.kick <- struct{}{}:
	default: // an announcement is due already
	}
}

// stateTimeout bounds one state publish: a reading or an edge must not wait long on an
// external broker that is away (its next one says the same).
const stateTimeout = 2 * time.Second

func (h *homeAssistant) publish(topic string, payload []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	if err := h.bus.Publish(ctx, topic, payload, 0, true); err != nil {
		h.logger.Debug("publish a state for Home Assistant", logkey.Topic, topic, logkey.Err, err)
	}
}

func (h *homeAssistant) publishPin(name string, level int) {
	p := pinOff
	if level == 1 {
		p = pinOn
	}
	h.publish(pinTopic(h.gw, name), []byte(p))
}

// sensorHandler is next with the readings and input edges also published as states.
func (h *homeAssistant) sensorHandler(next sensors.Handler) sensors.Handler {
	if h == nil {
		return next
	}
	return sensors.HandlerFuncs{
		Reading: func(rd sensors.Reading) {
			if h.sensors[rd.Sensor].Driver == sensors.DriverGPIO {
				h.publishPin(rd.Sensor, int(rd.Values["level"]))
			} else if b, err := json.Marshal(rd.Values); err == nil {
				h.publish(sensorTopic(h.gw, rd.Sensor), b)
			}
			next.HandleReading(rd)
		},
		Edge: func(e sensors.Edge) {
			if h.watches[e.Watch] {
				h.publishPin(e.Sensor, e.Level)
			}
			next.HandleEdge(e)
		},
	}
}

// pinWriter is pins with every successful write published as the pin's state, whoever
// wrote: a function or Home Assistant.
func (h *homeAssistant) pinWriter(pins pinIO) pinIO {
	if h == nil {
		return pins
	}
	return statePins{pinIO: pins, h: h}
}

type statePins struct {
	pinIO
	h *homeAssistant
}

func (s statePins) WritePin(pin string, level int) error {
	if err := s.pinIO.WritePin(pin, level); err != nil {
		return err
	}
	s.h.publishPin(s.h.sensorOfPin(pin), level)
	return nil
}

// sensorOfPin is the name of the gpio sensor that declares pin (by its name or its pin).
func (h *homeAssistant) sensorOfPin(pin string) string {
	if _, ok := h.sensors[pin]; ok {
		return pin
	}
	for name, sc := range h.sensors {
		if sc.Driver == sensors.DriverGPIO && sc.Pin == pin {
			return name
		}
	}
	return pin
}

// subscriptions are what the switches' commands and Home Assistant's birth message need.
func (h *homeAssistant) subscriptions() []mqtt.Subscription {
	if h == nil {
		return nil
	}
	return []mqtt.Subscription{{Filter: pinCommandFilter(h.gw)}, {Filter: homeassistant.BirthTopic(h.ann.Prefix)}}
}

// messageHandler is next with the switches' commands and Home Assistant's birth message
// also taken: a command drives the
// output pin it names, through the same write a function's gpio.write makes after its
// commit, and only pins declared mode: out (WritePin refuses the others). A function
// whose trigger matches the command topic gets the message too.
func (h *homeAssistant) messageHandler(next mqtt.Handler) mqtt.Handler {
	if h == nil {
		return next
	}
	filter, birth := pinCommandFilter(h.gw), homeassistant.BirthTopic(h.ann.Prefix)
	return mqtt.HandlerFunc(func(m *mqtt.Message) {
		switch {
		case mqtt.Match(filter, m.Topic) && !m.Retain:
			h.command(m.Topic, string(m.Payload))
		case m.Topic == birth && string(m.Payload) == homeassistant.Online:
			// Home Assistant restarted, or its broker did and lost the retained configs.
			h.ann.Forget()
			h.again()
		}
		next.HandleMessage(m)
	})
}

func (h *homeAssistant) command(topic, payload string) {
	slug := strings.Split(topic, "/")[3]
	level, err := strconv.Atoi(strings.TrimSpace(payload))
	if err != nil || (level != 0 && level != 1) {
		h.logger.Warn("switch command is not "+pinOn+" or "+pinOff, logkey.Topic, topic)
		return
	}
	for name, sc := range h.sensors {
		if homeassistant.Slug(name) == slug && sc.Mode == sensors.ModeOut {
			if err := h.pinWriter(h.pins).WritePin(name, level); err != nil {
				h.logger.Warn("switch command", logkey.Pin, name, logkey.Err, err)
			}
			return
		}
	}
	h.logger.Warn("switch command for a pin that is not an output", logkey.Topic, topic)
}
