package main

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
)

// TestMemoryPressureRefusesState: devices flood the embedded broker with retained
// messages under a small gateway.memory_limit. Before the live heap reaches the limit
// the gateway says it is short of memory and stops keeping retained messages, so the
// heap stays under the limit (instead of the collector spinning past it), and the
// gateway still answers on MQTT and the API.
func TestMemoryPressureRefusesState(t *testing.T) {
	apiPort, mqttPort := loopback.FreePort(t), loopback.FreePort(t)
	dir := t.TempDir()
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway:
  id: mem
  data_dir: ./data
  memory_limit: 40MiB
  console: {listen: 127.0.0.1:%d}
mqtt:
  embedded: {listen: 127.0.0.1:%d, device_rate: -1}
`, apiPort, mqttPort), nil)
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()
	broker := fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)

	payload := bytes.Repeat([]byte("r"), 4<<10)
	var published int
	for d := 0; d < 12 && gw.metric("moongate_memory_pressure") == 0; d++ {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("flood-%d", d)))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		for i := range 1000 { // the per-device bound on retained messages
			tok := c.Publish(fmt.Sprintf("flood/%d/%d", d, i), 1, true, payload)
			if !tok.WaitTimeout(10 * time.Second) {
				t.Fatal("publish not acknowledged")
			}
			published++
		}
		c.Disconnect(100)
	}
	if gw.metric("moongate_memory_pressure") != 1 {
		t.Fatalf("after %d retained messages of 4 KiB the gateway never said it was short of memory", published)
	}
	refusedBefore := gw.metric(`moongate_broker_refused_total{reason="retained_full"}`)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("flood-more"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("the broker refused a device while short of memory: %v", tok.Error())
	}
	defer c.Disconnect(100)
	for i := range 200 {
		c.Publish(fmt.Sprintf("flood/more/%d", i), 1, true, payload).WaitTimeout(10 * time.Second)
	}
	if refused := gw.metric(`moongate_broker_refused_total{reason="retained_full"}`) - refusedBefore; refused != 200 {
		t.Fatalf("%v of 200 retained messages refused while short of memory", refused)
	}
	if heap := gw.metric("go_memstats_heap_alloc_bytes"); heap > 40<<20 {
		t.Fatalf("heap %.1f MiB, past the 40 MiB limit", heap/(1<<20))
	}
	t.Logf("pressure after %d retained messages; heap %.1f MiB", published, gw.metric("go_memstats_heap_alloc_bytes")/(1<<20))
	gw.stop()
}
