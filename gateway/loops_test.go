package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moongate/moongate/internal/poll"
)

// A function that publishes to its own trigger, and two functions that trigger each other,
// stop after gateway.loops.max_hops publishes: the last publish is refused, counted, and
// shown on the live log with the functions involved.
func TestLoopsStopAtMaxHops(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "self.lua", `function handle(e) kv.incr("n") mqtt.publish("self/x", "again", {qos = 0}) end`)
	writeFile(t, dir, "ping.lua", `function handle(e) kv.incr("n") mqtt.publish("pong/x", "1") end`)
	writeFile(t, dir, "pong.lua", `function handle(e) kv.incr("n") mqtt.publish("ping/x", "1") end`)
	tg := startYAML(t, dir, strings.Replace(baseConfig(dir, `functions:
  - {name: self, source: self.lua, triggers: ["mqtt:self/#"]}
  - {name: ping, source: ping.lua, triggers: ["mqtt:ping/#"]}
  - {name: pong, source: pong.lua, triggers: ["mqtt:pong/#@1"]}
`), "  id: test-gw\n", "  id: test-gw\n  loops: {max_hops: 5}\n", 1))

	before := tg.g.hub.Stats().Clients
	live, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(tg.api, "http")+"/api/v1/live", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	poll.Eventually(t, "the live client counted", func() bool { return tg.g.hub.Stats().Clients > before })

	c, _ := connectDevice(t, tg.broker, "loop-starter")
	c.Publish("self/x", 0, false, "go").Wait()
	c.Publish("ping/x", 1, false, "go").Wait()

	refused := func(fn string) float64 { return testutil.ToFloat64(tg.g.metrics.loopsStopped.WithLabelValues(fn)) }
	poll.Eventually(t, "both loops stopped", func() bool { return refused("self") == 1 && refused("ping")+refused("pong") == 1 })
	var n, ping, pong float64
	kvJSON(t, tg, "self", "n", &n)
	kvJSON(t, tg, "ping", "n", &ping)
	kvJSON(t, tg, "pong", "n", &pong)
	// The device's message starts a chain; each of 5 publishes adds a hop; the invocation
	// that would publish a 6th is the last.
	if n != 6 || ping+pong != 6 {
		t.Fatalf("self ran %v times, ping and pong %v and %v: want 6 each loop", n, ping, pong)
	}

	live.SetReadDeadline(time.Now().Add(10 * time.Second))
	want := map[string]bool{"self → self → self → self → self → self": false, "ping → pong → ping → pong → ping → pong": false}
	for !want["self → self → self → self → self → self"] || !want["ping → pong → ping → pong → ping → pong"] {
		_, data, err := live.ReadMessage()
		if err != nil {
			t.Fatalf("live: no loop message naming the functions (%v); seen %v", err, want)
		}
		for chain := range want {
			if strings.Contains(string(data), `"type":"log"`) && strings.Contains(string(data), "loop stopped") && strings.Contains(string(data), chain) {
				want[chain] = true
			}
		}
	}
}

// A function's publishes beyond gateway.loops.publish_rate wait: all of them go out,
// and the waits are counted.
func TestPublishRateDelays(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "fan.lua", `function handle(e) for i = 1, 60 do mqtt.publish("fan/out", tostring(i)) end end`)
	tg := startYAML(t, dir, strings.Replace(baseConfig(dir, `functions:
  - {name: fan, source: fan.lua, triggers: ["mqtt:fan/in"]}
`), "  id: test-gw\n", "  id: test-gw\n  loops: {publish_rate: 20}\n", 1))
	got := subscribe(t, tg.broker, "fan-sub", "fan/out")
	c, _ := connectDevice(t, tg.broker, "fan-starter")
	c.Publish("fan/in", 1, false, "go").Wait()
	poll.Eventually(t, "all 60 publishes", func() bool { return len(got.on("fan/out")) == 60 })
	// 60 publishes over a burst of 20 at 20 a second: some wait (how many depends on how
	// fast the others went out).
	if d := testutil.ToFloat64(tg.g.metrics.publishesDelayed.WithLabelValues("fan")); d == 0 {
		t.Fatal("no publish waited for the rate")
	}
	for i, p := range got.on("fan/out") {
		if string(p) != fmt.Sprint(i+1) {
			t.Fatalf("publish %d is %q: out of order", i+1, p)
		}
	}
}
