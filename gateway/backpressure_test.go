package gateway

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A device that publishes QoS 0 readings faster than its function keeps up is slowed down
// (the broker stops reading it), not dropped: every reading runs. And a flood of distinct
// topics does not make a goroutine per topic.
func TestBurstIsSlowedNotDropped(t *testing.T) {
	dir := t.TempDir()
	// About 0.1 ms a reading: slower than a device can publish.
	writeFile(t, dir, "count.lua", `function handle(e) local x = 0 for i = 1, 2000 do x = x + i end kv.incr("n") end`)
	// No fair share for this device: it stands for many.
	tg := startYAML(t, dir, strings.Replace(baseConfig(dir, `functions:
  - {name: count, source: count.lua, triggers: ["mqtt:burst/+"]}
`), "embedded: {listen: 127.0.0.1:0}", "embedded: {listen: 127.0.0.1:0, device_rate: -1}", 1))

	var peak atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(time.Millisecond):
				peak.Store(max(peak.Load(), int64(runtime.NumGoroutine())))
			}
		}
	}()
	base := runtime.NumGoroutine()

	const n = 40000 // of which 10000 on topics of their own: more than maxWorkers
	// No keepalive to speak of: QoS 0 brings the device nothing back, so paho pings once
	// the burst outlasts its keepalive, and on a loaded machine the ping waits behind the
	// burst longer than paho's ping timeout: paho then drops the connection and the
	// readings it still queues, which is the client's loss, not the gateway's.
	dev := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID("burst").SetWriteTimeout(time.Minute).
		SetKeepAlive(10 * time.Minute))
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer dev.Disconnect(50)
	// Most on one topic (one ordering key, so one invocation at a time), the rest on a
	// topic each (an ordering key each).
	for i := range n {
		topic := "burst/one"
		if i%4 == 3 {
			topic = fmt.Sprintf("burst/t%d", i)
		}
		dev.Publish(topic, 0, false, "1")
	}
	// Invocations, failed ones too: on a loaded machine one may pass its timeout, and
	// that is not a dropped reading.
	ok := func() float64 { return testutil.ToFloat64(tg.g.metrics.invocations.WithLabelValues("count", "ok")) }
	failed := func() float64 { return testutil.ToFloat64(tg.g.metrics.invocations.WithLabelValues("count", "error")) }
	var count float64
	for deadline := time.Now().Add(2 * time.Minute); count != n && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		count = ok() + failed()
	}
	close(stopSampling)
	<-sampled
	dropped := testutil.ToFloat64(tg.g.metrics.dropped.WithLabelValues("count", "queue_full"))
	t.Logf("%d readings: %v ran (%v failed), %v dropped; goroutines %d before, at most %d during", n, count, failed(), dropped, base, peak.Load())
	if count != n || dropped != 0 {
		t.Fatalf("%v of %d readings ran, %v dropped: a burst must be slowed down, not dropped", count, n, dropped)
	}
	if extra := peak.Load() - int64(base); extra > maxWorkers+50 {
		t.Fatalf("%d goroutines more during the burst: one per topic, not at most %d workers", extra, maxWorkers)
	}
}

// With overflow: drop_oldest a full function sheds its oldest QoS 0 readings instead of
// holding the devices: every reading either ran or was dropped, counted in /metrics and in
// the function's counters (the console's card).
func TestOverflowDropOldest(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "tele.lua", `function handle(e) local x = 0 for i = 1, 40000 do x = x + i end kv.incr("n") end`)
	tg := startYAML(t, dir, strings.Replace(baseConfig(dir, `functions:
  - {name: tele, source: tele.lua, triggers: ["mqtt:tele/+"], overflow: drop_oldest}
`), "embedded: {listen: 127.0.0.1:0}", "embedded: {listen: 127.0.0.1:0, device_rate: -1}", 1))

	const devices, each = 20, 200
	done := make(chan struct{})
	for d := range devices {
		go func() {
			defer func() { done <- struct{}{} }()
			c := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID(fmt.Sprintf("tele-%d", d)))
			if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Errorf("connect: %v", tok.Error())
				return
			}
			defer c.Disconnect(250)
			var last paho.Token
			for i := range each {
				last = c.Publish(fmt.Sprintf("tele/%d", d), 0, false, fmt.Sprint(i))
			}
			last.WaitTimeout(10 * time.Second)
		}()
	}
	for range devices {
		<-done
	}
	dropped := func() float64 { return testutil.ToFloat64(tg.g.metrics.dropped.WithLabelValues("tele", "overflow")) }
	// Invocations, not the KV count: on a loaded machine one may pass its timeout.
	invoked := func() float64 {
		return testutil.ToFloat64(tg.g.metrics.invocations.WithLabelValues("tele", "ok")) +
			testutil.ToFloat64(tg.g.metrics.invocations.WithLabelValues("tele", "error"))
	}
	var ran float64
	for deadline := time.Now().Add(time.Minute); ran+dropped() != devices*each; time.Sleep(10 * time.Millisecond) {
		ran = invoked()
		if time.Now().After(deadline) {
			t.Fatalf("of %d readings %v ran and %v were dropped", devices*each, ran, dropped())
		}
	}
	t.Logf("%d readings: %v ran, %v dropped", devices*each, ran, dropped())
	if dropped() == 0 {
		t.Fatal("nothing dropped: the function was never full, so the test shows nothing")
	}
	r := call(t, "GET", tg.api+"/api/v1/functions/tele", "", nil)
	var doc struct {
		Overflow string `json:"overflow"`
		Counters struct {
			Dropped float64 `json:"dropped"`
		} `json:"counters"`
	}
	if err := json.Unmarshal([]byte(r.raw), &doc); err != nil || doc.Overflow != "drop_oldest" || doc.Counters.Dropped != dropped() {
		t.Fatalf("GET function: %s (%v)", r.raw, err)
	}
}
