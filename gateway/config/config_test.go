package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moongate/moongate/sensors"
)

func write(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.lua"), []byte("function handle(e) end\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "moongate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFull(t *testing.T) {
	t.Setenv("CLOUD_TOKEN", "s3cret")
	p := write(t, `
gateway:
  id: pi-kitchen
  data_dir: ./data
  console: {listen: 127.0.0.1:8080}
mqtt:
  broker: embedded
  embedded: {listen: 127.0.0.1:1883}
sensors:
  kitchen: {driver: bme280, bus: "1", addr: 0x76, every: 10s}
  button:  {driver: gpio, pin: GPIO17, pull: up}
functions:
  - name: temp-alert
    source: f.lua
    triggers: ["mqtt:sensors/+/temp", "mqtt:alarms/#@1", "sensor:kitchen", "gpio:GPIO17:falling:50ms", "every:30s"]
    timeout: 250ms
    memory: 8MiB
    env: {THRESHOLD: "30"}
    emit: alerts
sync:
  outbox: {max_bytes: 1MiB, ttl: 24h, on_full: reject_new}
  sinks:
    - name: cloud
      http:
        url: https://example.invalid/ingest
        headers: {Authorization: "Bearer ${CLOUD_TOKEN}"}
      batch: {max_records: 100, max_bytes: 64KiB, linger: 200ms}
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	f := c.Functions[0]
	if f.Timeout != 250*time.Millisecond || f.Memory != 8<<20 || f.Concurrency != 2 || *f.Retries != 3 {
		t.Errorf("function limits: %+v", f)
	}
	if f.Code != "function handle(e) end\n" {
		t.Errorf("code not read: %q", f.Code)
	}
	want := []Trigger{
		{Kind: TriggerMQTT, Spec: "mqtt:sensors/+/temp", Filter: "sensors/+/temp"},
		{Kind: TriggerMQTT, Spec: "mqtt:alarms/#@1", Filter: "alarms/#", QoS: 1},
		{Kind: TriggerSensor, Spec: "sensor:kitchen", Sensor: "kitchen"},
		{Kind: TriggerGPIO, Spec: "gpio:GPIO17:falling:50ms", Watch: sensors.Watch{Pin: "GPIO17", Edge: "falling", Debounce: 50 * time.Millisecond}},
		{Kind: TriggerEvery, Spec: "every:30s", Every: 30 * time.Second},
	}
	for i, w := range want {
		if f.Parsed[i] != w {
			t.Errorf("trigger %d = %+v, want %+v", i, f.Parsed[i], w)
		}
	}
	if got := c.Sync.Sinks[0].HTTP.Headers["Authorization"]; got != "Bearer s3cret" {
		t.Errorf("env not expanded: %q", got)
	}
	if c.Sync.Outbox.MaxBytes != 1<<20 || c.Sync.Sinks[0].Batch.MaxBytes != 64<<10 || c.Sync.Sinks[0].Streams[0] != "*" {
		t.Errorf("sync: %+v", c.Sync)
	}
	var s struct {
		Driver string        `yaml:"driver"`
		Bus    string        `yaml:"bus"`
		Addr   uint16        `yaml:"addr"`
		Every  time.Duration `yaml:"every"`
	}
	n := c.Sensors["kitchen"]
	if err := c.DecodeStrict(&n, "sensors.kitchen", &s); err != nil {
		t.Fatal(err)
	}
	if s.Addr != 0x76 || s.Every != 10*time.Second || s.Bus != "1" {
		t.Errorf("sensor: %+v", s)
	}
}

// Every error is reported at once, each with file, line and key.
func TestLoadErrors(t *testing.T) {
	p := write(t, `gateway:
  id: x
  consle: {listen: 127.0.0.1:8080}
functions:
  - name: a
    source: missing.lua
    triggers: ["mqtt:a/#/b", "sensor:nope", "bogus"]
    timeout: 10x
    memory: lots
  - name: a
    source: f.lua
    triggers: ["every:1s"]
    overflow: sometimes
sync:
  outbox: {on_full: explode}
`)
	_, err := Load(p)
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want ErrorList, got %v", err)
	}
	want := []string{
		p + ":3: gateway.consle: unknown key",
		p + ":6: functions[0].source: cannot read",
		p + ":7: functions[0].triggers[0]: trigger \"mqtt:a/#/b\"",
		p + ":7: functions[0].triggers[1]: sensor \"nope\" is not defined",
		p + ":7: functions[0].triggers[2]: trigger \"bogus\"",
		p + ":8: functions[0].timeout: cannot unmarshal `10x` into time.Duration",
		p + ":9: functions[0].memory: invalid size \"lots\"",
		p + ":10: functions[1].name: duplicate function \"a\"",
		p + ":13: functions[1].overflow: \"sometimes\" is not block or drop_oldest",
		p + ":15: sync.outbox.on_full: \"explode\" is not drop_oldest or reject_new",
	}
	got := err.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if len(list) != len(want) {
		t.Errorf("got %d errors, want %d:\n%s", len(list), len(want), got)
	}
}

func TestTokenRequiredOffLoopback(t *testing.T) {
	p := write(t, "gateway:\n  console:\n    listen: 0.0.0.0:8080\n")
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), ":3: gateway.console.token: required") {
		t.Fatalf("got %v", err)
	}
}

func TestDefaultsAndEmpty(t *testing.T) {
	c, err := Load(write(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.MQTT.Broker != "embedded" || c.Gateway.Console.Listen != "127.0.0.1:8080" || d.Gateway.DataDir != "./moongate-data" {
		t.Errorf("defaults: %+v", c)
	}
}

func TestSyntaxError(t *testing.T) {
	_, err := Load(write(t, "gateway:\n  id: [unclosed\n"))
	if err == nil || !strings.Contains(err.Error(), "moongate.yaml:") {
		t.Fatalf("got %v", err)
	}
}

func TestParseTrigger(t *testing.T) {
	bad := []string{"", "mqtt:", "mqtt:a/#@2", "mqtt:a+/b", "gpio:", "gpio:P:up", "gpio:P:rising:fast", "every:1ns", "every:soon", "cron:* * *", "sensor"}
	for _, s := range bad {
		if _, err := ParseTrigger(s); err == nil {
			t.Errorf("ParseTrigger(%q) accepted", s)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("gateway: {id: x}\nfunctions: [{name: a, source: f.lua, triggers: [\"mqtt:#\"]}]\n"))
	f.Add([]byte("sensors: {a: {driver: sim}}\nsync: {sinks: [{name: c, http: {url: http://x}}]}"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Parse("fuzz.yaml", data) // must not panic or hang
	})
}

// A value that is empty because its ${VAR} is unset or empty says which variable, at
// that value's line, for decode and validation errors alike.
func TestBlankVariableNamed(t *testing.T) {
	t.Setenv("MOONGATE_TEST_EMPTY", "")
	p := write(t, `functions:
  - name: f
    source: f.lua
    triggers: ["mqtt:a/#"]
    timeout: "${MOONGATE_TEST_EMPTY}"
sync:
  sinks:
    - name: cloud
      http: {url: "${MOONGATE_TEST_UNSET}/ingest"}
`)
	_, err := Load(p)
	want := []string{
		p + ":5: functions[0].timeout: cannot unmarshal `` into time.Duration (${MOONGATE_TEST_EMPTY} is set but empty)",
		p + `:9: sync.sinks[0].http.url: "/ingest" is not a URL like http://host:port (${MOONGATE_TEST_UNSET} is not set)`,
	}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}

func TestMaxPacketSizeBounds(t *testing.T) {
	c, err := Load(write(t, "mqtt:\n  embedded: {max_packet_size: 1MiB}\n"))
	if err != nil || c.MQTT.Embedded.MaxPacketSize != 1<<20 {
		t.Fatalf("1MiB: %v, %v", err, c)
	}
	_, err = Load(write(t, "mqtt:\n  embedded:\n    max_packet_size: 512MiB\n"))
	if err == nil || !strings.Contains(err.Error(), ":3: mqtt.embedded.max_packet_size: 512 MiB is not between 1KiB and 256MiB") {
		t.Fatalf("got %v", err)
	}
}
