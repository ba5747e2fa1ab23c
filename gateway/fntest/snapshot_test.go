package fntest

import (
	"encoding/json"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/moongate/moongate/gateway/config"
)

const snapLua = `function handle(event)
  if event.source == "gpio" then gpio.write("relay", event.level) return nil end
  if event.source == "timer" then kv.incr("ticks") return "tick" end
  if event.source == "sensor" then return {t = event.values.temp} end
  if event.payload == "boom" then error("boom") end
  mqtt.publish("out/" .. event.topic, event.payload)
  return event.payload
end
`

// Every kind of recorded event becomes a case that expects what the function did: the
// pin it wrote, the KV it left, the result, the publish, the error's kind and line; and
// the file it makes passes.
func TestSnapshotEveryEventKind(t *testing.T) {
	retries := 0
	fn := config.Function{Name: "snap", Source: "functions/snap.lua", Code: snapLua, Timeout: config.DefaultFunctionTimeout,
		Memory: config.DefaultFunctionMemory, Concurrency: 1, Retries: &retries}
	var recs []Record
	for _, l := range []string{
		`{"ts": 1000, "function": "snap", "event": {"source": "gpio", "pin": "GPIO17", "level": 1, "edge": "rising"}}`,
		`{"ts": 2000, "function": "snap", "event": {"source": "timer", "topic": "every:30s"}}`,
		`{"ts": 3000, "function": "snap", "event": {"source": "sensor", "sensor": "kitchen", "values": {"temp": 21.5}}}`,
		`{"ts": 4000, "function": "snap", "event": {"source": "mqtt", "topic": "in/a", "payload": {"n": 1}, "qos": 1}}`,
		`{"ts": 5000, "function": "snap", "event": {"source": "mqtt", "topic": "in/b", "payload": "boom"}}`,
		`{"ts": 6000, "function": "snap", "event": {"source": "console"}}`,
	} {
		var r Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	var sensors map[string]yaml.Node
	if err := yaml.Unmarshal([]byte("relay: {driver: gpio, pin: GPIO27, mode: out}"), &sensors); err != nil {
		t.Fatal(err)
	}
	out, err := Snapshot(&config.Config{Sensors: sensors}, fn, recs)
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	flat := strings.Join(strings.Fields(text), " ") // the checks do not count indentation
	for _, want := range []string{
		"outputs:\n  - relay\n  - GPIO27",
		"gpio:\n            pin: GPIO17\n            level: 1\n            edge: rising",
		"gpio_writes:\n          - pin: relay\n            level: 1",
		"timer: every:30s",
		"kv:\n          ticks: 1\n        result: tick",
		"result:\n          t: 21.5",
		"topic: out/in/a",
		"error:\n          kind: runtime\n          line: 5",
	} {
		if !strings.Contains(flat, strings.Join(strings.Fields(want), " ")) {
			t.Errorf("the snapshot has no %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "recorded 6") {
		t.Errorf("an API invocation without a topic became a case:\n%s", text)
	}
	f, err := Parse("snap_test.yaml", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range (&Runner{}).RunFunction(f, fn) {
		if !res.OK {
			t.Errorf("%s: %v", res.Case, res.Diffs)
		}
	}
	// A function that changed fails the snapshot.
	fn.Code = strings.Replace(snapLua, `"out/"`, `"moved/"`, 1)
	failed := 0
	for _, res := range (&Runner{}).RunFunction(f, fn) {
		if !res.OK {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d cases fail after the change, want 1", failed)
	}
}
