package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/poll"
)

// metric reads one sample from /metrics, -1 when absent.
func metric(t *testing.T, tg *testGateway, name string) float64 {
	t.Helper()
	resp, err := http.Get(tg.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		var v float64
		if _, err := fmt.Sscanf(line, name+" %g", &v); err == nil {
			return v
		}
	}
	return -1
}

// mqtt.embedded.max_packet_size sets the embedded broker's limit: a packet over it
// disconnects the device and counts in /metrics; one under it, over the default 256KiB,
// goes through.
func TestMaxPacketSizeKey(t *testing.T) {
	dir := t.TempDir()
	tg := startTest(t, dir, fmt.Sprintf(`gateway:
  data_dir: %s
  console: {listen: 127.0.0.1:0}
mqtt:
  embedded: {listen: 127.0.0.1:0, max_packet_size: 512KiB}
`, filepath.Join(dir, "data")))
	sub := subscribe(t, tg.broker, "watcher", "big/#")
	dev := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID("big-dev").SetAutoReconnect(false))
	if tok := dev.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer dev.Disconnect(100)
	if got := metric(t, tg, "moongate_mqtt_oversize_packets_total"); got != 0 {
		t.Fatalf("oversize before: %v", got)
	}
	dev.Publish("big/ok", 0, false, bytes.Repeat([]byte("o"), 400<<10))
	poll.Eventually(t, "the 400 KiB message", func() bool { return len(sub.on("big/ok")) == 1 })
	dev.Publish("big/no", 0, false, bytes.Repeat([]byte("n"), 600<<10))
	poll.Eventually(t, "the oversize count", func() bool { return metric(t, tg, "moongate_mqtt_oversize_packets_total") == 1 })
	if len(sub.on("big/no")) != 0 {
		t.Error("the oversize message was forwarded")
	}
}

const effectsFn = `
function handle(event)
  local n = kv.incr("n")
  kv.set("last", {n = n})
  kv.del("gone")
  cloud.emit("seen", {n = n})
  mqtt.publish("out/x", "hello " .. n, {qos = 1})
  gpio.write("relay", 1)
  return {n = n}
end
`

// effectsConfig writes fx.lua into dir and returns a config that runs it, with the relay
// it switches, and extra.
func effectsConfig(t *testing.T, dir, extra string) string {
	t.Helper()
	writeFile(t, dir, "fx.lua", effectsFn)
	return baseConfig(dir, `sensors:
  relay: {driver: gpio, pin: GPIO27, mode: out, initial: 0, sim: true}
functions:
  - name: fx
    source: fx.lua
    triggers: ["mqtt:in/#"]
    emit: results
`+extra)
}

// A dry run (POST .../invoke?dry_run=1) runs the function and applies nothing: no KV
// write, no outbox record, no publish (a device subscribed on the embedded broker sees
// nothing), no GPIO write; it answers what the invocation would have done. A real invoke
// answers the same list as effects, and they happened.
func TestInvokeDryRun(t *testing.T) {
	dir := t.TempDir()
	tg := startTest(t, dir, effectsConfig(t, dir, ""))
	sub := subscribe(t, tg.broker, "watcher", "out/#")
	pending := func() int64 { return tg.g.store.Stats().PendingRecords }
	state := func() string {
		t.Helper()
		var n float64
		has := kvJSON(t, tg, "fx", "n", &n)
		lvl, err := tg.g.pins.ReadPin("relay")
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("kv n %v %v, outbox %d, relay %d", has, n, pending(), lvl)
	}
	invoke := func(query string) map[string]any {
		t.Helper()
		r := call(t, "POST", tg.api+"/api/v1/functions/fx/invoke"+query, "", map[string]any{"topic": "in/a"})
		if r.status != http.StatusOK || r.body["error"] != nil {
			t.Fatalf("invoke%s: %d %s", query, r.status, r.raw)
		}
		return r.body
	}
	asJSON := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	wantEffects := func(n int) string { // in asJSON's form: keys sorted
		var v any
		json.Unmarshal(fmt.Appendf(nil, `{"kv":[{"key":"n","value":%d},{"key":"last","value":{"n":%d}},{"key":"gone","deleted":true}],`+
			`"emits":[{"stream":"seen","data":{"n":%d}},{"stream":"results","data":{"n":%d}}],`+
			`"publishes":[{"topic":"out/x","payload":"hello %d","qos":1,"retain":false}],"gpio":[{"pin":"relay","level":1}]}`, n, n, n, n, n), &v)
		return asJSON(v)
	}

	before := state()
	dry := invoke("?dry_run=1")
	if dry["dry_run"] != true || dry["effects"] != nil || asJSON(dry["would"]) != wantEffects(1) {
		t.Errorf("dry run answered %s,\nwant would = %s", asJSON(dry), wantEffects(1))
	}
	if asJSON(dry["result"]) != `{"n":1}` {
		t.Errorf("dry run result %s", asJSON(dry["result"]))
	}
	if after := state(); after != before {
		t.Errorf("a dry run changed the gateway: %s, then %s", before, after)
	}

	real := invoke("")
	if real["dry_run"] != nil || real["would"] != nil || asJSON(real["effects"]) != wantEffects(1) {
		t.Errorf("invoke answered %s,\nwant effects = %s", asJSON(real), wantEffects(1))
	}
	if got, want := state(), "kv n true 1, outbox 2, relay 1"; got != want {
		t.Errorf("after invoke: %s, want %s", got, want)
	}
	// The real invoke's publish arrives; had the dry run published, its message would
	// have come first, on the same connection.
	poll.Eventually(t, "the invoke's publish", func() bool { return len(sub.on("out/x")) > 0 })
	if msgs := sub.on("out/x"); len(msgs) != 1 || string(msgs[0]) != "hello 1" {
		t.Errorf("subscriber got %q, want only the real invoke's", msgs)
	}

	// A dry run after it reads the committed counter: it would make it 2, and leaves it 1.
	before = state()
	if dry = invoke("?dry_run=1"); asJSON(dry["would"]) != wantEffects(2) {
		t.Errorf("second dry run would %s, want %s", asJSON(dry["would"]), wantEffects(2))
	}
	if after := state(); after != before {
		t.Errorf("a dry run changed the gateway: %s, then %s", before, after)
	}
}

// Records that no sink takes are shown, per stream, in /api/v1/sync's unrouted, and a
// function whose emit: stream no sink takes is named in a warning at start.
func TestUnroutedStreams(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "moongate.yaml")
	if err := os.WriteFile(path, []byte(effectsConfig(t, dir, `sync:
  sinks:
    - name: cloud
      streams: ["seen"]
      http: {url: "http://127.0.0.1:1/ingest"}
`)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	g := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("gateway stopped at start: %v", err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	api := "http://" + g.HTTPAddr()
	if !strings.Contains(logs.String(), `msg="no sink takes this function's emit stream`) || !strings.Contains(logs.String(), "function=fx stream=results") {
		t.Errorf("no warning about the results stream in:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "stream=seen") {
		t.Errorf("warned about a stream a sink takes:\n%s", logs.String())
	}
	if r := call(t, "GET", api+"/api/v1/sync", "", nil); r.raw == "" || !strings.Contains(r.raw, `"unrouted":[]`) {
		t.Errorf("before any record: %s", r.raw)
	}
	for range 2 {
		if r := call(t, "POST", api+"/api/v1/functions/fx/invoke", "", map[string]any{"topic": "in/a"}); r.body["error"] != nil {
			t.Fatalf("invoke: %s", r.raw)
		}
	}
	if r := call(t, "GET", api+"/api/v1/sync", "", nil); !strings.Contains(r.raw, `"unrouted":[{"stream":"results","pending":2}]`) {
		t.Errorf("want results unrouted with 2 pending, got %s", r.raw)
	}
}
