package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moongate/moongate/gateway/fntest"
	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

// Record and replay against the real binary and its embedded broker: `moongate record`
// saves the events a device's publishes bring to a function; `moongate replay --dry-run`
// runs them again without applying anything, `replay` for real, in the recorded order;
// `moongate test --snapshot` turns them into a test file that passes today and fails
// when the function's behaviour changes.
func TestRecordReplaySnapshot(t *testing.T) {
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	dir, cfg := writeQuickstart(t, "embedded", mqttPort, apiPort)
	g := startGateway(t, dir, cfg, apiPort)
	defer g.stop(t)
	dev := mqttClient(t, fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), "recorded-device")
	publish := func(topic, payload string) {
		t.Helper()
		if tok := dev.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}

	out, errOut := &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	var rec sync.WaitGroup
	var code int
	rec.Go(func() { code = Main(ctx, []string{"record", "--api", g.api, "-f", "temp-alert"}, out, errOut) })
	defer func() { cancel(); rec.Wait() }()
	// The recorder is on the stream once a warm-up event shows in the recording.
	poll.Within(t, 20*time.Second, "the recorder to record a warm-up event", func() bool {
		publish("sensors/warm/temp", `{"temp": 10}`)
		return strings.Contains(out.String(), "sensors/warm/temp")
	})
	publish("sensors/kitchen/temp", `{"temp": 31.5}`)
	publish("sensors/hall/temp", `21.0`)
	publish("sensors/kitchen/temp", `{"humidity": 40}`)
	poll.Within(t, 20*time.Second, "three recorded events", func() bool {
		return strings.Count(out.String(), "sensors/kitchen/temp") == 2 && strings.Contains(out.String(), "sensors/hall/temp")
	})
	cancel()
	rec.Wait()
	if code != exitOK || !strings.Contains(errOut.String(), "recorded ") {
		t.Fatalf("record: exit %d\n%s", code, errOut)
	}
	recording := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(recording, []byte(out.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r fntest.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("recorded line %q: %v", l, err)
		}
		if r.Function != "temp-alert" || r.Event.Source != "mqtt" || r.Event.QoS != 1 || r.TS == 0 {
			t.Errorf("recorded %q", l)
		}
		if !strings.Contains(r.Event.Topic, "warm") {
			topics = append(topics, r.Event.Topic+" "+string(r.Event.Payload))
		}
	}
	want := []string{`sensors/kitchen/temp {"temp":31.5}`, `sensors/hall/temp 21.0`, `sensors/kitchen/temp {"humidity":40}`}
	if strings.Join(topics, "\n") != strings.Join(want, "\n") {
		t.Errorf("recorded events:\n%s\nwant:\n%s", strings.Join(topics, "\n"), strings.Join(want, "\n"))
	}

	kitchen := func() string {
		_, kv := apiJSON(t, http.MethodGet, g.api+"/api/v1/functions/temp-alert/kv?prefix=readings/kitchen", nil)
		b, _ := json.Marshal(kv["items"])
		return string(b)
	}
	before := kitchen()
	if !strings.Contains(before, `"value":1`) {
		t.Fatalf("the live KV after the recording: %s", before)
	}
	c, rout, rerr := moongate(t, "replay", recording, "--api", g.api, "--speed", "max", "--dry-run")
	if c != exitOK || !strings.Contains(rout, "0 failed (dry run: nothing was applied)") {
		t.Fatalf("replay --dry-run: exit %d\n%s%s", c, rout, rerr)
	}
	if after := kitchen(); after != before {
		t.Errorf("a dry replay changed the KV: %s, then %s", before, after)
	}
	c, rout, rerr = moongate(t, "replay", recording, "--api", g.api, "--speed", "1000x", "--function", "temp-alert")
	if c != exitOK || !strings.Contains(rout, "0 failed") {
		t.Fatalf("replay: exit %d\n%s%s", c, rout, rerr)
	}
	if i, j := strings.Index(rout, "kitchen/temp ok {"), strings.Index(rout, "hall/temp ok null"); i < 0 || j < i {
		t.Errorf("replay out of the recorded order:\n%s", rout)
	}
	if after := kitchen(); !strings.Contains(after, `"value":2`) {
		t.Errorf("after a replay the KV reads %s, want the kitchen reading counted again", after)
	}

	// The snapshot passes as it is, and catches a change of behaviour.
	c, snap, serr := moongate(t, "test", "--snapshot", recording, "-c", cfg)
	if c != exitOK || !strings.Contains(snap, "alerts/kitchen") {
		t.Fatalf("test --snapshot: exit %d\n%s%s", c, snap, serr)
	}
	testFile := filepath.Join(dir, "functions", "temp_alert_test.yaml")
	if err := os.WriteFile(testFile, []byte(snap), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, tout, terr := moongate(t, "test", "-c", cfg, testFile); c != exitOK || !strings.Contains(tout, " 0 failed") {
		t.Fatalf("the snapshot fails today: exit %d\n%s%s\n%s", c, tout, terr, snap)
	}
	lua := filepath.Join(dir, "functions", "temp_alert.lua")
	src, _ := os.ReadFile(lua)
	if err := os.WriteFile(lua, bytes.Replace(src, []byte(`"alerts/"`), []byte(`"alarms/"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, tout, _ := moongate(t, "test", "-c", cfg, testFile); c != exitFailure ||
		!strings.Contains(tout, `publishes[0].topic: want "alerts/kitchen", got "alarms/kitchen"`) {
		t.Errorf("the snapshot after a change: exit %d\n%s", c, tout)
	}
}

func TestReplaySpeed(t *testing.T) {
	for in, want := range map[string]float64{"max": 0, "1x": 1, "10x": 10, "0.5x": 0.5, "2": 2} {
		if got, err := parseSpeed(in); err != nil || got != want {
			t.Errorf("--speed %s: %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "0x", "-2x"} {
		if _, err := parseSpeed(in); err == nil {
			t.Errorf("--speed %q accepted", in)
		}
	}
	if code, _, errOut := moongate(t, "replay", "missing.jsonl", "--speed", "fast"); code != exitUsage || !strings.Contains(errOut, "--speed") {
		t.Errorf("replay --speed fast: exit %d %s", code, errOut)
	}
}
