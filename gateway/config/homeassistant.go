package config

import (
	"fmt"
	"strings"

	"github.com/moongate/moongate/mqtt"
)

// DefaultHomeAssistantPrefix is Home Assistant's own default discovery prefix.
const DefaultHomeAssistantPrefix = "homeassistant"

// HomeAssistant announces the gateway's sensors, pins and declared function outputs to
// Home Assistant through MQTT discovery, on the gateway's own bus.
type HomeAssistant struct {
	Discovery bool   `yaml:"discovery"`
	Prefix    string `yaml:"prefix"` // default DefaultHomeAssistantPrefix
}

// The components a function output may be shown as.
const (
	OutputSensor       = "sensor"
	OutputBinarySensor = "binary_sensor"
)

// Output is a value a function publishes with mqtt.publish, declared so that Home
// Assistant can show it: functions publish to topics they compute, so nothing else says
// which of them are values worth an entity.
type Output struct {
	Topic string `yaml:"topic"` // required: where the function publishes the value
	Name  string `yaml:"name"`  // default: the topic
	// Component is OutputSensor (default) or OutputBinarySensor (payloads ON and OFF).
	Component     string `yaml:"component"`
	DeviceClass   string `yaml:"device_class"`   // Home Assistant's, e.g. temperature
	Unit          string `yaml:"unit"`           // unit_of_measurement, e.g. °C
	ValueTemplate string `yaml:"value_template"` // e.g. "{{ value_json.temp }}" for a JSON payload
}

func (h *HomeAssistant) withDefaults() {
	if h.Prefix == "" {
		h.Prefix = DefaultHomeAssistantPrefix
	}
}

// validateHomeAssistant checks the homeassistant: section and the functions' outputs.
func (c *Config) validateHomeAssistant() ErrorList {
	var errs ErrorList
	add := func(key, format string, args ...any) { errs = append(errs, c.Errorf(key, format, args...)) }
	if p := c.HomeAssistant.Prefix; mqtt.ValidTopic(p) != nil || strings.HasPrefix(p, "$") || strings.HasPrefix(p, "moongate/") || p == "moongate" {
		add("homeassistant.prefix", "%q is not a topic prefix Home Assistant can subscribe to (e.g. homeassistant)", p)
	}
	for i, f := range c.Functions {
		for j, o := range f.Outputs {
			key := fmt.Sprintf("functions[%d].outputs[%d]", i, j)
			if err := mqtt.ValidTopic(o.Topic); err != nil {
				add(key+".topic", "%v", err)
			}
			switch o.Component {
			case "", OutputSensor, OutputBinarySensor:
			default:
				add(key+".component", "%q is not %s or %s", o.Component, OutputSensor, OutputBinarySensor)
			}
			if o.Component == OutputBinarySensor && o.Unit != "" {
				add(key+".unit", "a binary_sensor has no unit")
			}
		}
	}
	return errs
}
