package gateway

import (
	"fmt"
	"sync"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/sensors"
)

// compiler builds versions: it checks a spec's triggers against the sensors the gateway
// has, compiles the source and warms the VM pool, without touching what runs.
type compiler struct {
	sensors map[string]sensors.Config // the decoded sensors: entries
	watch   func(sensors.Watch) error // registers a gpio watch (sensors.Manager.Watch)
	host    luafn.Host                // what every function may reach
	mu      sync.Mutex                // guards watched and running
	watched map[sensors.Watch]bool    // gpio watches registered with the sensors
	running bool                      // the sensors run: no new watch until a restart
}

// build compiles spec and warms its VM pool.
func (c *compiler) build(spec functionSpec) (*version, error) {
	var triggers []config.Trigger
	for _, s := range spec.Triggers {
		t, err := config.ParseTrigger(s)
		if err != nil {
			return nil, &deployRefused{Field: "triggers", Err: err}
		}
		if err := c.checkTrigger(t); err != nil {
			return nil, &deployRefused{Field: "triggers", Err: err}
		}
		triggers = append(triggers, t)
	}
	fn, err := newFunction(spec, c.host)
	if err != nil {
		return nil, &deployRefused{Err: err}
	}
	return &version{name: spec.Name, number: spec.Version, spec: spec, fn: fn, triggers: triggers,
		emit: spec.Emit, retries: spec.Retries}, nil
}

// checkTrigger refuses triggers that name sensors or pins the gateway does not have. A
// gpio trigger's watch is registered with the sensors before they run; a deploy that needs
// a new watch later is refused, since the pin's edge detection is set up at start.
func (c *compiler) checkTrigger(t config.Trigger) error {
	switch t.Kind {
	case config.TriggerSensor:
		if _, ok := c.sensors[t.Sensor]; !ok {
			return fmt.Errorf("trigger %q: no sensor %q in the config", t.Spec, t.Sensor)
		}
	case config.TriggerGPIO:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.watched[t.Watch] {
			return nil
		}
		if c.running {
			return fmt.Errorf("trigger %q: a new gpio watch needs a restart: add the trigger to moongate.yaml", t.Spec)
		}
		if err := c.watch(t.Watch); err != nil {
			return fmt.Errorf("trigger %q: %w", t.Spec, err)
		}
		c.watched[t.Watch] = true
	}
	return nil
}

// sensorsStarted is called before the sensors run: their watches are fixed from then on.
func (c *compiler) sensorsStarted() {
	c.mu.Lock()
	c.running = true
	c.mu.Unlock()
}

// addWatch registers a gpio watch the gateway itself needs (Home Assistant's binary
// sensors) before the sensors run; a function may then use it too.
func (c *compiler) addWatch(w sensors.Watch) error {
	return c.checkTrigger(config.Trigger{Kind: config.TriggerGPIO, Spec: "gpio:" + w.String(), Watch: w})
}
