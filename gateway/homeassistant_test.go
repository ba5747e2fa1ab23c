package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/mosquittotest"
	"github.com/moongate/moongate/internal/poll"
)

// haSchema is Home Assistant's MQTT discovery schema for the components the gateway
// announces (home-assistant.io/integrations/sensor.mqtt, binary_sensor.mqtt,
// switch.mqtt, and the discovery page for the device block): the keys each requires and
// every key it accepts. Home Assistant refuses a config with a key it does not know.
var haSchema = map[string]struct{ required, allowed []string }{
	"sensor": {
		required: []string{"state_topic"},
		allowed: []string{"device_class", "expire_after", "force_update", "last_reset_value_template", "options",
			"state_class", "state_topic", "suggested_display_precision", "unit_of_measurement", "value_template"},
	},
	"binary_sensor": {
		required: []string{"state_topic"},
		allowed: []string{"device_class", "expire_after", "force_update", "off_delay", "payload_off", "payload_on",
			"state_topic", "value_template"},
	},
	"switch": {
		required: []string{"command_topic"},
		allowed: []string{"command_template", "command_topic", "device_class", "optimistic", "payload_off", "payload_on",
			"retain", "state_off", "state_on", "state_topic", "value_template"},
	},
}

// haCommon are the keys every MQTT entity accepts; haDevice the device block's.
var (
	haCommon = []string{"availability", "availability_mode", "availability_template", "availability_topic",
		"payload_available", "payload_not_available", "default_entity_id", "device", "enabled_by_default", "encoding",
		"entity_category", "icon", "json_attributes_template", "json_attributes_topic", "name", "object_id",
		"origin", "platform", "qos", "unique_id"}
	haDevice = []string{"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
		"model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"}
	// haUnits are the units Home Assistant accepts for the sensor device classes used.
	haUnits = map[string][]string{
		"temperature": {"°C", "°F", "K"},
		"humidity":    {"%"},
		"pressure":    {"cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi"},
		"illuminance": {"lx"},
		"voltage":     {"V", "mV", "µV", "kV", "MV"},
	}
	haConfigTopic = regexp.MustCompile(`^homeassistant/(sensor|binary_sensor|switch)/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$`)
)

// checkDiscovery checks one discovery message against haSchema.
func checkDiscovery(topic string, payload []byte) error {
	m := haConfigTopic.FindStringSubmatch(topic)
	if m == nil {
		return fmt.Errorf("topic %s is not PREFIX/COMPONENT/NODE_ID/OBJECT_ID/config", topic)
	}
	schema := haSchema[m[1]]
	var cfg map[string]any
	if err := json.Unmarshal(payload, &cfg); err != nil {
		return fmt.Errorf("%s: %v", topic, err)
	}
	var errs []string
	for _, k := range schema.required {
		if _, ok := cfg[k]; !ok {
			errs = append(errs, "missing "+k)
		}
	}
	for k := range cfg {
		if !slices.Contains(schema.allowed, k) && !slices.Contains(haCommon, k) {
			errs = append(errs, "unknown key "+k)
		}
	}
	dev, _ := cfg["device"].(map[string]any)
	if ids, _ := dev["identifiers"].([]any); len(ids) == 0 {
		errs = append(errs, "device.identifiers is empty (a device needs identifiers or connections)")
	}
	for k := range dev {
		if !slices.Contains(haDevice, k) {
			errs = append(errs, "unknown device key "+k)
		}
	}
	if cfg["unique_id"] == nil || cfg["unique_id"] == "" {
		errs = append(errs, "no unique_id: the entity could not join the device")
	}
	if dc, ok := cfg["device_class"].(string); ok && m[1] == "sensor" {
		if units, known := haUnits[dc]; !known || !slices.Contains(units, fmt.Sprint(cfg["unit_of_measurement"])) {
			errs = append(errs, fmt.Sprintf("unit %v is not one of device class %s's %v", cfg["unit_of_measurement"], dc, units))
		}
	}
	if sc, ok := cfg["state_class"]; ok && sc != "measurement" && sc != "total" && sc != "total_increasing" {
		errs = append(errs, fmt.Sprintf("state_class %v", sc))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: %s", topic, strings.Join(errs, "; "))
	}
	return nil
}

// The table itself holds: a config Home Assistant would refuse is refused.
func TestDiscoverySchemaCheck(t *testing.T) {
	dev := `"device": {"identifiers": ["x"], "name": "x"}, "unique_id": "u"`
	for _, c := range []struct {
		topic, payload string
		ok             bool
	}{
		{"homeassistant/sensor/gw/t/config", `{"state_topic": "a", ` + dev + `}`, true},
		{"homeassistant/sensor/gw/t/config", `{` + dev + `}`, false},                     // no state_topic
		{"homeassistant/switch/gw/t/config", `{"state_topic": "a", ` + dev + `}`, false}, // no command_topic
		{"homeassistant/sensor/gw/t/config", `{"state_topic": "a", "command_topic": "b", ` + dev + `}`, false},
		{"homeassistant/sensor/gw/t/config", `{"state_topic": "a", "device_class": "temperature", "unit_of_measurement": "C", ` + dev + `}`, false},
		{"homeassistant/sensor/g.w/t/config", `{"state_topic": "a", ` + dev + `}`, false},
		{"homeassistant/sensor/gw/t/config", `{"state_topic": "a", "device": {"name": "x"}, "unique_id": "u"}`, false},
	} {
		if err := checkDiscovery(c.topic, []byte(c.payload)); (err == nil) != c.ok {
			t.Errorf("%s %s: got %v, want ok=%v", c.topic, c.payload, err, c.ok)
		}
	}
}

// haClient is Home Assistant's side: a real MQTT client that keeps the last message of
// each topic and whether it came retained.
type haClient struct {
	cli  paho.Client
	mu   sync.Mutex
	last map[string]haMsg
}

type haMsg struct {
	payload  string
	retained bool
}

var haClients atomic.Int64

func connectHA(t *testing.T, broker string, filters ...string) *haClient {
	t.Helper()
	h := &haClient{last: map[string]haMsg{}}
	h.cli = paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("home-assistant-%d", haClients.Add(1))))
	if tok := h.cli.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { h.cli.Disconnect(100) })
	for _, f := range filters {
		if tok := h.cli.Subscribe(f, 0, func(_ paho.Client, m paho.Message) {
			h.mu.Lock()
			h.last[m.Topic()] = haMsg{string(m.Payload()), m.Retained()}
			h.mu.Unlock()
		}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", f, tok.Error())
		}
	}
	return h
}

func (h *haClient) get(topic string) (haMsg, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.last[topic]
	return m, ok
}

func (h *haClient) waitFor(t *testing.T, topic string, ok func(string) bool) haMsg {
	t.Helper()
	var m haMsg
	poll.Eventually(t, topic, func() bool {
		var seen bool
		m, seen = h.get(topic)
		return seen && ok(m.payload)
	})
	return m
}

func (h *haClient) publish(t *testing.T, topic, payload string) {
	t.Helper()
	h.send(t, topic, payload, false)
}

// publishRetained replaces (or with "" clears) a retained message, as a broker that
// restarted without its retained messages would have it.
func (h *haClient) publishRetained(t *testing.T, topic, payload string) {
	t.Helper()
	h.send(t, topic, payload, true)
}

func (h *haClient) send(t *testing.T, topic, payload string, retain bool) {
	t.Helper()
	if tok := h.cli.Publish(topic, 1, retain, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// With homeassistant.discovery on, a real MQTT client in Home Assistant's place finds a
// retained discovery config (valid for Home Assistant's schema) for every sensor value,
// gpio pin and declared function output, their state topics carry the values, the
// switch drives the output pin, a deleted function's entity is removed, and the
// availability topic says online, then offline on a clean stop.
func TestHomeAssistantDiscovery(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("double.lua", `function handle(event) mqtt.publish("derived/room/double", tostring(event.values.temp * 2)) end`)
	// Home Assistant's user may read what the gateway announces and command its switches.
	write("acl", "topic readwrite homeassistant/#\ntopic read moongate/#\ntopic read derived/#\ntopic write moongate/test-gw/gpio/+/set\n")
	tg := startTest(t, dir, fmt.Sprintf(`gateway:
  id: test-gw
  data_dir: %s
  console: {listen: 127.0.0.1:0}
mqtt:
  broker: embedded
  embedded: {listen: 127.0.0.1:0, acl_file: acl}
homeassistant: {discovery: true}
sensors:
  room:   {driver: sim, every: 20ms, values: {temp: "21", humidity: "40", pressure: "1000", lux: "300", a0: "1.5", wind: "3"}}
  button: {driver: gpio, pin: GPIO22, sim: true}
  relay:  {driver: gpio, pin: GPIO27, mode: out, sim: true}
functions:
  - name: double
    source: double.lua
    triggers: ["sensor:room"]
    outputs: [{topic: derived/room/double, name: double temp, device_class: temperature, unit: "°C"}]
`, filepath.Join(dir, "data")))
	defer tg.stop(t)
	ha := connectHA(t, tg.broker, "homeassistant/#", "moongate/#", "derived/#")

	cfgTopic := func(component, object string) string {
		return "homeassistant/" + component + "/test-gw/" + object + "/config"
	}
	want := map[string]struct{ class, unit string }{
		cfgTopic("sensor", "room_temp"):                     {"temperature", "°C"},
		cfgTopic("sensor", "room_humidity"):                 {"humidity", "%"},
		cfgTopic("sensor", "room_pressure"):                 {"pressure", "hPa"},
		cfgTopic("sensor", "room_lux"):                      {"illuminance", "lx"},
		cfgTopic("sensor", "room_a0"):                       {"voltage", "V"},
		cfgTopic("sensor", "room_wind"):                     {},
		cfgTopic("binary_sensor", "button"):                 {},
		cfgTopic("switch", "relay"):                         {},
		cfgTopic("sensor", "fn_double_derived_room_double"): {"temperature", "°C"},
	}
	for topic := range want {
		ha.waitFor(t, topic, func(string) bool { return true })
	}
	// Home Assistant connecting later finds them kept (ha may have seen them published).
	late := connectHA(t, tg.broker, "homeassistant/#")
	configs := map[string]map[string]any{}
	for topic, kind := range want {
		m := late.waitFor(t, topic, func(string) bool { return true })
		if !m.retained {
			t.Errorf("%s: not retained", topic)
		}
		if err := checkDiscovery(topic, []byte(m.payload)); err != nil {
			t.Error(err)
		}
		var c map[string]any
		_ = json.Unmarshal([]byte(m.payload), &c)
		configs[topic] = c
		if c["device_class"] != nilIfEmpty(kind.class) || c["unit_of_measurement"] != nilIfEmpty(kind.unit) {
			t.Errorf("%s: device_class %v unit %v, want %q %q", topic, c["device_class"], c["unit_of_measurement"], kind.class, kind.unit)
		}
		if c["availability_topic"] != "moongate/test-gw/status" {
			t.Errorf("%s: availability_topic %v", topic, c["availability_topic"])
		}
		dev := c["device"].(map[string]any)
		if dev["manufacturer"] != "Moongate" || dev["name"] != "test-gw" || dev["sw_version"] != "test" {
			t.Errorf("%s: device %v", topic, dev)
		}
	}
	var ids []string
	for _, c := range configs {
		ids = append(ids, c["unique_id"].(string))
	}
	sort.Strings(ids)
	if len(slices.Compact(ids)) != len(want) {
		t.Errorf("unique_ids are not unique: %v", ids)
	}
	if m := ha.waitFor(t, "moongate/test-gw/status", func(p string) bool { return true }); m.payload != "online" || !m.retained {
		t.Errorf("status: %+v", m)
	}

	// Each sensor entity's template finds its value on the state topic.
	var state map[string]float64
	ha.waitFor(t, "moongate/test-gw/sensors/room", func(p string) bool { return json.Unmarshal([]byte(p), &state) == nil })
	for _, v := range []string{"temp", "humidity", "pressure", "lux", "a0", "wind"} {
		c := configs[cfgTopic("sensor", "room_"+v)]
		if c["state_topic"] != "moongate/test-gw/sensors/room" || c["value_template"] != "{{ value_json."+v+" }}" {
			t.Errorf("room %s: state_topic %v value_template %v", v, c["state_topic"], c["value_template"])
		}
		if _, ok := state[v]; !ok {
			t.Errorf("room's state %v has no %s", state, v)
		}
	}
	if state["temp"] != 21 {
		t.Errorf("room temp %v", state["temp"])
	}
	fn := configs[cfgTopic("sensor", "fn_double_derived_room_double")]
	if fn["state_topic"] != "derived/room/double" || fn["name"] != "double temp" {
		t.Errorf("function output: %v", fn)
	}
	ha.waitFor(t, "derived/room/double", func(p string) bool { return p == "42" })

	// Pins: the states, a command through the switch, an edge on the input.
	sw := configs[cfgTopic("switch", "relay")]
	if sw["command_topic"] != "moongate/test-gw/gpio/relay/set" || sw["state_topic"] != "moongate/test-gw/gpio/relay" ||
		sw["payload_on"] != "1" || sw["state_on"] != "1" {
		t.Errorf("switch: %v", sw)
	}
	ha.waitFor(t, "moongate/test-gw/gpio/relay", func(p string) bool { return p == "0" })
	ha.waitFor(t, "moongate/test-gw/gpio/button", func(p string) bool { return p == "0" })
	ha.publish(t, "moongate/test-gw/gpio/relay/set", "1")
	ha.waitFor(t, "moongate/test-gw/gpio/relay", func(p string) bool { return p == "1" })
	if l, err := tg.g.pins.ReadPin("relay"); err != nil || l != 1 {
		t.Errorf("relay after the command: %d, %v", l, err)
	}
	if r := call(t, http.MethodPost, "http://"+tg.g.HTTPAddr()+"/api/v1/gpio/button", "", map[string]int{"level": 1}); r.status != http.StatusNoContent {
		t.Fatalf("simulate edge: %d %s", r.status, r.raw)
	}
	ha.waitFor(t, "moongate/test-gw/gpio/button", func(p string) bool { return p == "1" })

	// Home Assistant's birth message brings every config back, lost or not.
	ha.publishRetained(t, cfgTopic("sensor", "room_temp"), "")
	ha.waitFor(t, cfgTopic("sensor", "room_temp"), func(p string) bool { return p == "" })
	ha.publish(t, "homeassistant/status", "online")
	ha.waitFor(t, cfgTopic("sensor", "room_temp"), func(p string) bool { return checkDiscovery(cfgTopic("sensor", "room_temp"), []byte(p)) == nil })

	// A deleted function's entity goes away.
	if r := call(t, http.MethodDelete, "http://"+tg.g.HTTPAddr()+"/api/v1/functions/double", "", nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	ha.waitFor(t, cfgTopic("sensor", "fn_double_derived_room_double"), func(p string) bool { return p == "" })

	tg.stop(t)
	ha.waitFor(t, "moongate/test-gw/status", func(p string) bool { return p == "offline" })
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// On an external broker (Mosquitto, which Home Assistant shares), the configs and states
// go there, and the availability topic is the gateway's will: when the gateway stops
// cleanly it says offline itself.
func TestHomeAssistantExternalBroker(t *testing.T) {
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	dir := t.TempDir()
	cfg := strings.Replace(baseConfig(dir, `homeassistant: {discovery: true, prefix: homeassistant}
sensors:
  room: {driver: sim, every: 20ms, values: {temp: "21"}}
`), "  broker: embedded\n  embedded: {listen: 127.0.0.1:0}\n", fmt.Sprintf("  broker: %s\n", m.URL), 1)
	tg := startTest(t, dir, cfg)
	ha := connectHA(t, m.URL, "homeassistant/#", "moongate/#")
	topic := "homeassistant/sensor/test-gw/room_temp/config"
	if err := checkDiscovery(topic, []byte(ha.waitFor(t, topic, func(string) bool { return true }).payload)); err != nil {
		t.Error(err)
	}
	ha.waitFor(t, "moongate/test-gw/sensors/room", func(p string) bool { return p == `{"temp":21}` })
	ha.waitFor(t, "moongate/test-gw/status", func(p string) bool { return p == "online" })
	tg.stop(t)
	ha.waitFor(t, "moongate/test-gw/status", func(p string) bool { return p == "offline" })
}
