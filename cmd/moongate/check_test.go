package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// refusedConfigs are the configs the suite shows refused (gateway/config, sensors, the
// Lua compiler, sinks, the external broker), each with the messages it must produce.
// Files other than moongate.yaml sit beside it; DIR in the yaml is the temp dir.
var refusedConfigs = []struct {
	name  string
	files map[string]string
	yaml  string
	want  []string // each in the output, DIR replaced
}{
	{name: "config errors at once (gateway/config TestLoadErrors)",
		files: map[string]string{"f.lua": "function handle(e) end\n"},
		yaml: `gateway:
  id: x
  consle: {listen: 127.0.0.1:0}
functions:
  - name: a
    source: missing.lua
    triggers: ["mqtt:a/#/b", "sensor:nope", "bogus"]
    timeout: 10x
    memory: lots
  - name: a
    source: f.lua
    triggers: ["every:1s"]
sync:
  outbox: {on_full: explode}
`,
		want: []string{":3: gateway.consle: unknown key", ":6: functions[0].source: cannot read",
			":7: functions[0].triggers[1]: sensor \"nope\" is not defined", ":10: functions[1].name: duplicate function \"a\"",
			":14: sync.outbox.on_full: \"explode\""}},
	{name: "token off loopback (gateway/config TestTokenRequiredOffLoopback)",
		yaml: "gateway:\n  console:\n    listen: 0.0.0.0:0\n",
		want: []string{":3: gateway.console.token: required"}},
	{name: "yaml syntax (gateway/config TestSyntaxError)",
		yaml: "gateway:\n  id: [unclosed\n",
		want: []string{"moongate.yaml:"}},
	{name: "a config error and a Lua syntax error in one pass (TestConfigErrors)",
		files: map[string]string{"bad.lua": "function handle(e)\n  return e.x +\nend\n"},
		yaml:  "functions:\n  - name: f\n    source: bad.lua\n    triggers: [\"mqtt:a/#\"]\n    timeout: soon\n",
		want:  []string{"moongate.yaml:5: functions[0].timeout: cannot unmarshal `soon`", "DIR/bad.lua:3: functions[0]: syntax error"}},
	{name: "a Lua file without handle",
		files: map[string]string{"nohandle.lua": "x = 1\n"},
		yaml:  "functions:\n  - name: f\n    source: nohandle.lua\n    triggers: [\"mqtt:a/#\"]\n",
		want:  []string{"moongate.yaml:3: functions[0].source: DIR/nohandle.lua: no global function handle"}},
	{name: "a top level that fails",
		files: map[string]string{"boom.lua": "function handle(e) end\nerror(\"boom\")\n"},
		yaml:  "functions:\n  - name: f\n    source: boom.lua\n    triggers: [\"mqtt:a/#\"]\n",
		want:  []string{"DIR/boom.lua:2: functions[0]: boom"}},
	{name: "a limit only the Lua runtime refuses",
		files: map[string]string{"f.lua": "function handle(e) end\n"},
		yaml:  "functions:\n  - name: f\n    source: f.lua\n    triggers: [\"mqtt:a/#\"]\n    timeout: 100us\n",
		want:  []string{"moongate.yaml:2: functions[0]: function f: timeout 100µs: must be at least 1ms"}},
	{name: "an unset variable",
		yaml: "sync:\n  sinks:\n    - name: cloud\n      http: {url: \"${MOONGATE_TEST_UNSET_URL}\"}\n",
		want: []string{`:4: sync.sinks[0].http.url: "" is not a URL like http://host:port (${MOONGATE_TEST_UNSET_URL} is not set)`}},
	{name: "a sink topic with a wildcard",
		yaml: "sync:\n  sinks:\n    - name: up\n      mqtt: {broker: tcp://127.0.0.1:1, topic: \"gw/+\"}\n",
		want: []string{`:3: sync.sinks[0]: sink up: mqtt: topic "gw/+": wildcards cannot be published to`}},
	{name: "a sink CA file that is missing",
		yaml: "sync:\n  sinks:\n    - name: cloud\n      http: {url: \"https://127.0.0.1:1/in\", ca: missing.pem}\n",
		want: []string{":3: sync.sinks[0]: sink cloud:", "missing.pem"}},
	{name: "a sink window past MQTT's packet ids, TLS files on a plain sink (sync/sink New)",
		yaml: "sync:\n  sinks:\n    - name: up\n      mqtt: {broker: tcp://127.0.0.1:1, topic: gw/up, window: 70000}\n" +
			"    - name: plain\n      mqtt: {broker: tcp://127.0.0.1:1, topic: gw/up, tls: {ca: ca.pem}}\n",
		want: []string{":3: sync.sinks[0]: sink up: mqtt window 70000: at most 65535 packet ids",
			":5: sync.sinks[1]: sink plain: mqtt broker tcp://127.0.0.1:1: tls files given for a plain connection"}},
	{name: "a sensor with an unknown key and a bad expression",
		yaml: "sensors:\n  k: {driver: sim, every: 1s, values: {t: \"1+\"}, colour: red}\n",
		want: []string{":2: sensors.k.colour: unknown key", ":2: sensors.k.values.t:"}},
	{name: "a gpio trigger on an output pin (sensors Watch)",
		files: map[string]string{"f.lua": "function handle(e) end\n"},
		yaml: "sensors:\n  relay: {driver: gpio, pin: GPIO27, mode: out, sim: true}\n" +
			"functions:\n  - name: f\n    source: f.lua\n    triggers: [\"gpio:GPIO27:falling\"]\n",
		want: []string{":6: functions[0].triggers[0]: watch GPIO27:falling: gpio pin GPIO27 is an output (mode: out)"}},
	{name: "broker TLS files on a plain connection",
		yaml: "mqtt:\n  broker: tcp://127.0.0.1:1\n  tls: {ca: ca.pem}\n",
		want: []string{"mqtt: broker URL \"tcp://127.0.0.1:1\": TLS files given for a connection without TLS"}},
	{name: "two sensors on one pin (sensors TestNewRejectsBadConfigAtOnce)",
		yaml: "sensors:\n  b: {driver: gpio, pin: GPIO4}\n  c: {driver: gpio, pin: GPIO4, mode: out}\n  d: {driver: nope}\n",
		want: []string{":3: sensors.c: pin GPIO4 is already used by sensor b", `:4: sensors.d.driver: unknown driver "nope"`}},
}

// check and run refuse the same configs, in one pass, with the same messages: run is
// refused before it opens anything, so nothing in its output differs from check's.
func TestCheckAndRunAgree(t *testing.T) {
	for _, tc := range refusedConfigs {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// Should run accept the config, it must not take the default ports or data dir.
			yaml := tc.yaml
			if !strings.Contains(yaml, "gateway:") {
				yaml += "gateway:\n  data_dir: " + filepath.Join(dir, "data") + "\n  console: {listen: 127.0.0.1:0}\n"
			}
			if !strings.Contains(yaml, "mqtt:") {
				yaml += "mqtt:\n  embedded: {listen: 127.0.0.1:0}\n"
			}
			cfg := filepath.Join(dir, "moongate.yaml")
			if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			out := map[string]string{}
			for _, cmd := range []string{"check", "run"} {
				var stdout, stderr bytes.Buffer
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				code := Main(ctx, []string{cmd, "-c", cfg}, &stdout, &stderr)
				cancel()
				if code != exitUsage {
					t.Errorf("%s: exit %d, want 2; stderr:\n%s", cmd, code, stderr.String())
				}
				out[cmd] = strings.TrimPrefix(stderr.String(), "moongate "+cmd+": ")
				if strings.Contains(out[cmd], "goroutine") || strings.Contains(out[cmd], "panic") {
					t.Errorf("%s: stack trace in:\n%s", cmd, out[cmd])
				}
			}
			if out["check"] != out["run"] {
				t.Errorf("check and run disagree:\ncheck:\n%s\nrun:\n%s", out["check"], out["run"])
			}
			for _, w := range tc.want {
				if w = strings.ReplaceAll(w, "DIR", dir); !strings.Contains(out["check"], w) {
					t.Errorf("missing %q in:\n%s", w, out["check"])
				}
			}
		})
	}
}
