package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/mosquittotest"
	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store/storetest"
)

// TestBrokerBacklog: while the gateway is stopped, devices publish more messages than the
// gateway queues per function (gateway maxQueued, 16384) to its Mosquitto session; the
// function publishes a QoS 1 message for each. When the gateway starts, the broker sends
// the whole backlog at once. The gateway must work through it: full queues hold the broker
// back, but must not hold back the broker's PUBACKs for the function's own publishes.
func TestBrokerBacklog(t *testing.T) {
	broker := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{Config: mosquittoQueueConfig})
	apiPort := loopback.FreePort(t)
	dir := t.TempDir()
	lua := strings.Replace(counterLua, `  cloud.emit("seen", {device = dev, seq = seq})`,
		`  cloud.emit("seen", {device = dev, seq = seq})
  mqtt.publish("echo/" .. dev, {seq = seq}, {qos = 1})`, 1)
	cfg := writeGatewayFiles(t, dir, counterConfig(broker.URL, loopback.FreePort(t), apiPort), map[string]string{"counter.lua": lua})
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

// TestBrokerBurstQoS0: devices flood Mosquitto with QoS 0 readings faster than the function
// runs, and the function publishes a QoS 1 message back to the same broker for each. Every
// reading the broker passed on must reach the function: a full gateway holds the broker
// back (it stops taking deliveries) instead of dropping, and doing so must not hold back the
// PUBACKs of the function's own publishes, or it would wait for ever.
func TestBrokerBurstQoS0(t *testing.T) {
	broker := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{Config: mosquittoQueueConfig})
	apiPort := loopback.FreePort(t)
	dir := t.TempDir()
	const lua = `
function handle(event)
  local p = event.payload
  kv.incr("count/" .. p.device)
  mqtt.publish("echo/" .. p.device, {seq = p.seq}, {qos = 1})
end
`
	cfg := writeGatewayFiles(t, dir, strings.Replace(counterConfig(broker.URL, loopback.FreePort(t), apiPort), "@1", "@0", 1),
		map[string]string{"counter.lua": lua})
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()

	var echoes atomic.Int64
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(broker.URL).SetClientID("echo-sub").
		SetDefaultPublishHandler(func(paho.Client, paho.Message) { echoes.Add(1) }))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("echo/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	const devices, perDevice = 4, 10000 // more than the gateway queues per function (16384)
	var wg sync.WaitGroup
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("burst-%d", d)
			c := paho.NewClient(paho.NewClientOptions().AddBroker(broker.URL).SetClientID(id))
			if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Errorf("%s: %v", id, tok.Error())
				return
			}
			defer c.Disconnect(250)
			var last paho.Token
			for seq := 1; seq <= perDevice; seq++ {
				last = c.Publish("dev/"+id+"/x", 0, false, fmt.Sprintf(`{"device":%q,"seq":%d}`, id, seq))
			}
			last.WaitTimeout(10 * time.Second)
		}()
	}
	wg.Wait()

	total := devices * perDevice
	ok := func() float64 { return gw.metric(`moongate_invocations_total{function="counter",result="ok"}`) }
	last, lastChange := 0.0, time.Now()
	for ok() < float64(total) {
		if n := ok(); n != last {
			last, lastChange = n, time.Now()
		}
		if time.Since(lastChange) > 5*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	poll.Within(t, 30*time.Second, "the echoes", func() bool { return echoes.Load() >= int64(total) })
	if n, dropped := ok(), gw.metric("moongate_events_dropped_total"); n != float64(total) || dropped != 0 {
		t.Fatalf("%v of %d readings invoked, %v dropped", n, total, dropped)
	}
	gw.stop()
	st := storetest.Open(t, gw.storeDir())
	for d := range devices {
		if n := kvInt(t, st, "counter", fmt.Sprintf("count/burst-%d", d)); n != perDevice {
			t.Errorf("burst-%d: %d readings counted, want %d", d, n, perDevice)
		}
	}
}
