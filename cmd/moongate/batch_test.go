package main

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

const teleLua = `
function handle(event)
  kv.incr("n")
  cloud.emit("t", event.payload)
end
`

func batchConfig(durability string, mqttPort, apiPort int) string {
	return fmt.Sprintf(`gateway:
  id: batch
  data_dir: ./data
  console: {listen: 127.0.0.1:%d}
  durability: %s
  batch_interval: 1m
mqtt:
  embedded: {listen: 127.0.0.1:%d}
functions:
  - name: tele
    source: tele.lua
    triggers: ["mqtt:tele/+/x", "mqtt:dev/+/x@1"]
`, apiPort, durability, mqttPort)
}

// gateway.durability: batch syncs the commits of QoS 0 events together (here: not at all
// within the minute of batch_interval), where sync mode syncs each; a QoS 1 message is
// acknowledged only after a sync, in batch mode as in sync mode. Syncs are counted from
// the store (moongate_store_syncs_total), not inferred from time.
func TestDurabilityBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gateway binary")
	}
	const n = 100
	for _, mode := range []string{"sync", "batch"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			apiPort, mqttPort := loopback.FreePort(t), loopback.FreePort(t)
			cfg := writeGatewayFiles(t, dir, batchConfig(mode, mqttPort, apiPort), map[string]string{"tele.lua": teleLua})
			gw := newGatewayProc(t, dir, cfg, apiPort)
			gw.start()
			defer gw.stop()

			c := paho.NewClient(paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)).SetClientID("d1"))
			if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("connect: %v", tok.Error())
			}
			defer c.Disconnect(0)
			base := gw.metric("moongate_store_syncs_total")
			for i := range n {
				if tok := c.Publish("tele/d1/x", 0, false, fmt.Sprintf(`{"i":%d}`, i)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Fatalf("publish: %v", tok.Error())
				}
			}
			// Every commit has been written once its record is pending in the outbox.
			poll.Within(t, 30*time.Second, "the QoS 0 commits", func() bool { return gw.metric("moongate_outbox_pending_records") == n })
			syncs := gw.metric("moongate_store_syncs_total") - base
			switch {
			case mode == "sync" && syncs < n:
				t.Fatalf("sync mode: %v syncs for %d QoS 0 commits of one topic, one after another; want %d", syncs, n, n)
			case mode == "batch" && syncs != 0:
				t.Fatalf("batch mode: %v syncs for %d QoS 0 commits within batch_interval; want 0", syncs, n)
			}

			// A QoS 1 message: its PUBACK comes after its commit was synced.
			base = gw.metric("moongate_store_syncs_total")
			if tok := c.Publish("dev/d1/x", 1, false, `{"i":-1}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("QoS 1 publish: %v", tok.Error())
			}
			if syncs := gw.metric("moongate_store_syncs_total") - base; syncs < 1 {
				t.Fatalf("%s mode: a QoS 1 message was acknowledged after %v syncs; want its commit synced first", mode, syncs)
			}
			if got := gw.metric("moongate_outbox_pending_records"); got != n+1 {
				t.Fatalf("pending records %v after the QoS 1 ack; want %d", got, n+1)
			}
		})
	}
}
