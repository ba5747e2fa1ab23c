package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moongate/moongate/mqtt/mqtttest"
)

// TestBrokerBacklog: while the gateway is stopped, devices publish more messages than the
// gateway queues per function (gateway maxQueued, 16384) to its Mosquitto session; the
// function publishes a QoS 1 message for each. When the gateway starts, the broker sends
// the whole backlog at once. The gateway must work through it: full queues hold the broker
// back, but must not hold back the broker's PUBACKs for the function's own publishes.
func TestBrokerBacklog(t *testing.T) {
	broker := mqtttest.StartMosquitto(t, mqtttest.MosquittoOptions{Config: mosquittoQueueConfig})
	apiPort := freePort(t)
	dir := t.TempDir()
	lua := strings.Replace(counterLua, `  cloud.emit("seen", {device = dev, seq = seq})`,
		`  cloud.emit("seen", {device = dev, seq = seq})
  mqtt.publish("echo/" .. dev, {seq = seq}, {qos = 1})`, 1)
	cfg := writeGatewayFiles(t, dir, counterConfig(broker.URL, freePort(t), apiPort), map[string]string{"counter.lua": lua})
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start() // makes the gateway's session and subscription
	gw.stop()

	devs := newDevices("d", broker.URL, 4, 5000, 32)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitDevices(t, runDevices(ctx, devs), len(devs))

	gw.start()
	total := 4 * 5000
	start := time.Now()
	last, lastChange := 0.0, time.Now()
	for {
		n := gw.metric("moongate_outbox_pending_records")
		if int(n) >= total {
			break
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if time.Since(lastChange) > 5*time.Second {
			t.Fatalf("the gateway stopped after %v of %d messages: no commit for 5 s", n, total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("a backlog of %d messages committed in %v", total, time.Since(start).Round(time.Millisecond))
	gw.stop()
	finalCheck(t, gw, devs, 0)
}
