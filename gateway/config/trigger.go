package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sensors"
)

// TriggerKind is what starts a function.
type TriggerKind string

// The trigger kinds of SPEC §2.
const (
	TriggerMQTT   TriggerKind = "mqtt"
	TriggerGPIO   TriggerKind = "gpio"
	TriggerSensor TriggerKind = "sensor"
	TriggerEvery  TriggerKind = "every"
)

// Trigger is a parsed trigger SPEC string: mqtt:sensors/+/temp, mqtt:alarms/#@1,
// gpio:GPIO17:falling:50ms, sensor:kitchen, every:30s. The gpio part is the sensors
// package's Watch syntax, so the two can never disagree.
type Trigger struct {
	Kind   TriggerKind
	Spec   string        // the string as written
	Filter string        // mqtt
	QoS    byte          // mqtt
	Watch  sensors.Watch // gpio: pin, edge, debounce
	Sensor string        // sensor
	Every  time.Duration // every
}

// ParseTrigger parses one trigger SPEC string.
func ParseTrigger(spec string) (Trigger, error) {
	kind, rest, ok := strings.Cut(spec, ":")
	if !ok || rest == "" {
		return Trigger{}, fmt.Errorf("trigger %q: want KIND:ARGS with KIND mqtt, gpio, sensor or every", spec)
	}
	t := Trigger{Kind: TriggerKind(kind), Spec: spec}
	switch t.Kind {
	case TriggerMQTT:
		t.Filter = rest
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			q, err := strconv.Atoi(rest[i+1:])
			if err != nil || q < 0 || q > 1 {
				return Trigger{}, fmt.Errorf("trigger %q: QoS after @ must be 0 or 1", spec)
			}
			t.Filter, t.QoS = rest[:i], byte(q)
		}
		if err := mqtt.ValidFilter(t.Filter); err != nil {
			return Trigger{}, fmt.Errorf("trigger %q: %w", spec, err)
		}
	case TriggerGPIO:
		w, err := sensors.ParseWatch(rest)
		if err != nil {
			return Trigger{}, fmt.Errorf("trigger %q: %w", spec, err)
		}
		t.Watch = w
	case TriggerSensor:
		t.Sensor = rest
	case TriggerEvery:
		d, err := time.ParseDuration(rest)
		if err != nil || d < 10*time.Millisecond {
			return Trigger{}, fmt.Errorf("trigger %q: want a duration of at least 10ms, e.g. every:30s", spec)
		}
		t.Every = d
	default:
		return Trigger{}, fmt.Errorf("trigger %q: unknown kind %q (want mqtt, gpio, sensor or every)", spec, kind)
	}
	return t, nil
}
