package config

import (
	"strings"
	"testing"
)

func TestHomeAssistantConfig(t *testing.T) {
	c, err := Load(write(t, `homeassistant: {discovery: true}
functions:
  - name: a
    source: f.lua
    triggers: ["every:1s"]
    outputs: [{topic: out/a, device_class: temperature, unit: "°C"}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if !c.HomeAssistant.Discovery || c.HomeAssistant.Prefix != "homeassistant" || c.Functions[0].Outputs[0].Topic != "out/a" {
		t.Fatalf("got %+v %+v", c.HomeAssistant, c.Functions[0].Outputs)
	}

	p := write(t, `homeassistant: {discovery: true, prefix: "ha/#"}
functions:
  - name: a
    source: f.lua
    triggers: ["every:1s"]
    outputs:
      - {topic: "out/+"}
      - {topic: out/b, component: light}
      - {topic: out/c, component: binary_sensor, unit: V}
`)
	_, err = Load(p)
	for _, w := range []string{
		p + `:1: homeassistant.prefix: "ha/#" is not a topic prefix`,
		p + `:7: functions[0].outputs[0].topic:`,
		p + `:8: functions[0].outputs[1].component: "light" is not sensor or binary_sensor`,
		p + `:9: functions[0].outputs[2].unit: a binary_sensor has no unit`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in %v", w, err)
		}
	}
}
