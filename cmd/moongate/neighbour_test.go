package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

// TestBadNeighbourBounds: beside a well-behaved device, one client makes persistent
// sessions under ever new ids, a careless function triggers itself without end, and
// another writes KV on every message of that loop. (Two functions: a loop that writes
// KV itself would stop at the quota, at a hop that depends on timing, not at max_hops.) The real binary holds every bound: the sessions end past 64 for the
// address, the loop is refused past max_hops, the function's KV stops at its quota (its
// commits dead-lettered), while the good device's QoS 1 readings are all acknowledged and
// counted and the API answers; the heap ends under the memory limit.
func TestBadNeighbourBounds(t *testing.T) {
	apiPort, mqttPort := loopback.FreePort(t), loopback.FreePort(t)
	dir := t.TempDir()
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway:
  id: neighbour
  data_dir: ./data
  memory_limit: 64MiB
  kv_quota: {keys: 200}
  console: {listen: 127.0.0.1:%d}
mqtt:
  embedded: {listen: 127.0.0.1:%d}
functions:
  - {name: good, source: good.lua, triggers: ["mqtt:sensors/+/temp@1"]}
  - {name: looper, source: looper.lua, triggers: ["mqtt:loop/#"]}
  - {name: runaway, source: runaway.lua, triggers: ["mqtt:loop/#"]}
`, apiPort, mqttPort), map[string]string{
		"good.lua":   `function handle(e) kv.incr("n") end`,
		"looper.lua": `function handle(e) mqtt.publish("loop/again", "again") end`,
		"runaway.lua": `function handle(e)
  for i = 1, 10 do kv.set("junk/" .. e.id .. "/" .. i, string.rep("x", 900)) end
end`,
	})
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()
	broker := fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)
	connect := func(id string, clean bool) paho.Client {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(clean))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", id, tok.Error())
		}
		return c
	}

	good := connect("good", true)
	defer good.Disconnect(100)
	looper := connect("looper", true)
	defer looper.Disconnect(100)
	readings := 0
	for round := range 40 {
		for i := range 5 { // the roamer: persistent sessions under ever new ids
			connect(fmt.Sprintf("roamer-%d-%d", round, i), false).Disconnect(0)
		}
		looper.Publish("loop/start", 0, false, "go")
		tok := good.Publish("sensors/good/temp", 1, false, "21")
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("reading %d not acknowledged during the attack: %v", round, tok.Error())
		}
		readings++
		if resp, err := http.Get(gw.api() + "/api/v1/status"); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("API during the attack: %v", err)
		} else {
			resp.Body.Close()
		}
	}
	poll.Within(t, 20*time.Second, "the good function's count", func() bool {
		return gw.metric(`moongate_invocations_total{function="good",result="ok"}`) == float64(readings)
	})
	if n := gw.metric("moongate_broker_sessions"); n > 64 {
		t.Errorf("%v persistent sessions held, past the 64 of one address", n)
	}
	if n := gw.metric("moongate_broker_sessions_evicted_total"); n < 200-64 {
		t.Errorf("%v sessions ended, want at least %d", n, 200-64)
	}
	if n := gw.metric("moongate_loop_publishes_refused_total"); n == 0 {
		t.Error("the loop was never refused")
	}
	poll.Within(t, 20*time.Second, "the runaway's commits dead-lettered at its quota", func() bool {
		return gw.metric(`moongate_dead_letters_total{function="runaway"}`) > 0
	})
	if n := gw.metric(`moongate_kv_keys{function="runaway"}`); n > 200 {
		t.Errorf("the runaway holds %v keys, past its quota of 200", n)
	}
	if heap := gw.metric("go_memstats_heap_alloc_bytes"); heap > 64<<20 {
		t.Errorf("heap %.1f MiB, past the 64 MiB limit", heap/(1<<20))
	}
	gw.stop()
}
