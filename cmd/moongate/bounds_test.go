package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

// TestBoundsHoldOnTheBinary runs the attacks of issue 21 that TestBadNeighbourBounds
// and TestMemoryPressureRefusesState do not, one after the other, against one real
// gateway process. Each must hit its bound (counted where the bound says), and between
// attacks a good device's QoS 1 reading is acknowledged and the API answers; at the end
// the heap is under the memory limit and no pressure is left.
func TestBoundsHoldOnTheBinary(t *testing.T) {
	apiPort, mqttPort := loopback.FreePort(t), loopback.FreePort(t)
	endless := endlessHeaderServer(t)
	dir := t.TempDir()
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway:
  id: bounds
  data_dir: ./data
  memory_limit: 64MiB
  console: {listen: 127.0.0.1:%d}
mqtt:
  embedded: {listen: 127.0.0.1:%d, device_rate: -1}
functions:
  - {name: good, source: good.lua, triggers: ["mqtt:good/+/temp@1"]}
  - {name: topics, source: slow.lua, triggers: ["mqtt:sensors/+/temp"], concurrency: 2}
  - {name: longkey, source: longkey.lua, triggers: ["mqtt:longkey/x@1"], retries: 1}
  - {name: sys, source: sys.lua, triggers: ["mqtt:sys/x@1"], retries: 0}
  - {name: chatty, source: chatty.lua, triggers: ["mqtt:chatty/x@1"]}
  - {name: junk, source: emit.lua, triggers: ["mqtt:junk/x"], emit: junk}
  - {name: billing, source: emit.lua, triggers: ["mqtt:billing/x@1"], emit: billing}
  - {name: bigkv, source: bigkv.lua, triggers: ["mqtt:bigkv/x@1"]}
  - {name: tocloud, source: emit.lua, triggers: ["mqtt:cloud/x@1"], emit: cloud}
sync:
  outbox: {max_stream_bytes: 256KiB}
  sinks:
    - name: endless
      streams: [cloud]
      http: {url: "%s", timeout: 3s}
`, apiPort, mqttPort, endless), map[string]string{
		"good.lua":    `function handle(e) kv.incr("n") end`,
		"slow.lua":    `function handle(e) local x = 0 for i = 1, 2000 do x = x + i end end`,
		"longkey.lua": `function handle(e) kv.set(string.rep("k", 300), "1") end`,
		"sys.lua":     `function handle(e) mqtt.publish("$SYS/broker/clients/connected", "0") end`,
		"chatty.lua": `function handle(e)
  for i = 1, 100 do log.info(string.rep("x", 4096)) end
end`,
		"emit.lua":  `function handle(e) return {pad = string.rep("p", 2000)} end`,
		"bigkv.lua": `function handle(e) for i = 1, 4 do kv.set("big" .. i, string.rep("v", 600000)) end end`,
	})
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()
	broker := fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)
	connect := func(id string) paho.Client {
		t.Helper()
		c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", id, tok.Error())
		}
		return c
	}
	publish := func(c paho.Client, topic string, qos byte, payload string) {
		t.Helper()
		if tok := c.Publish(topic, qos, false, payload); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	good := connect("good")
	defer good.Disconnect(100)
	readings := 0
	stillServing := func(t *testing.T) {
		t.Helper()
		publish(good, "good/dev/temp", 1, "21")
		readings++
		resp, err := http.Get(gw.api() + "/api/v1/status")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("the API after the attack: %v", err)
		}
		resp.Body.Close()
	}
	dev := connect("attacker")
	defer dev.Disconnect(100)

	t.Run("0 distinct topics", func(t *testing.T) {
		// One goroutine per topic grew to 103k: the workers of a function are bounded.
		done := make(chan struct{})
		var peak float64
		var wg sync.WaitGroup
		defer wg.Wait()
		defer close(done)
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(50 * time.Millisecond):
					peak = max(peak, gw.metric("go_goroutines"))
				}
			}
		})
		const flood = 20000
		for i := range flood {
			tok := dev.Publish(fmt.Sprintf("sensors/d%d/temp", i), 0, false, "1")
			if i%500 == 499 { // paho queues QoS 0 without bound: keep its pings going
				tok.WaitTimeout(10 * time.Second)
			}
		}
		// A device's QoS 0 readings are not dropped: past the function's bound the device
		// waits (its connection is not read), so every one runs.
		poll.Within(t, 60*time.Second, "the flood to run", func() bool {
			return gw.metric(`moongate_invocations_total{function="topics",result="ok"}`)+
				gw.metric(`moongate_invocations_total{function="topics",result="error"}`) >= flood
		})
		t.Logf("at most %v goroutines", peak)
		if peak > 1024+300 {
			t.Errorf("%v goroutines during a flood of %d distinct topics, past the 1024 workers of a function", peak, flood)
		}
		stillServing(t)
	})

	t.Run("3 deep topic filters", func(t *testing.T) {
		deep := strings.Repeat("a/", 32000) + "#"
		start := time.Now()
		tok := dev.Subscribe(deep, 0, nil)
		if !tok.WaitTimeout(10 * time.Second) {
			t.Fatal("a filter of 32000 levels was not answered in 10 s")
		}
		if code := tok.(*paho.SubscribeToken).Result()[deep]; code != 0x80 {
			t.Errorf("a filter of 32000 levels got SUBACK code %#x, want 0x80 (refused)", code)
		}
		t.Logf("refused in %v", time.Since(start))
		stillServing(t)
	})

	t.Run("4 wills and $SYS", func(t *testing.T) {
		for _, will := range []string{"$SYS/broker/clients/connected", "alerts/+/x"} {
			c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("will").SetAutoReconnect(false).
				SetBinaryWill(will, []byte("spoof"), 0, true))
			if tok := c.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				c.Disconnect(0)
				t.Errorf("a will on %q was accepted", will)
			}
		}
		publish(dev, "sys/x", 1, "go")
		poll.Eventually(t, "the function's $SYS publish refused and dead-lettered", func() bool {
			return gw.metric(`moongate_dead_letters_total{function="sys"}`) == 1
		})
		stillServing(t)
	})

	t.Run("7 a key the store refuses", func(t *testing.T) {
		// It was retried for ever, its QoS 1 message never acknowledged: now it fails at
		// the call, is retried per retries, and goes to $dead.
		publish(dev, "longkey/x", 1, "go")
		poll.Eventually(t, "the long key dead-lettered", func() bool {
			return gw.metric(`moongate_dead_letters_total{function="longkey"}`) == 1
		})
		stillServing(t)
	})

	t.Run("8 ceilings", func(t *testing.T) {
		for field, body := range map[string]string{
			"memory":  `{"source": "function handle(e) end", "triggers": ["mqtt:x/y"], "memory": "1000GiB"}`,
			"timeout": `{"source": "function handle(e) end", "triggers": ["mqtt:x/y"], "timeout": "100000h"}`,
		} {
			req, _ := http.NewRequest("PUT", gw.api()+"/api/v1/functions/greedy", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			json.NewDecoder(resp.Body).Decode(&doc)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || doc["field"] != field {
				t.Errorf("a deploy past the %s ceiling: %d %v", field, resp.StatusCode, doc)
			}
		}
		stillServing(t)
	})

	t.Run("9 log floods", func(t *testing.T) {
		before := len(gw.c.out.String())
		for range 20 {
			publish(dev, "chatty/x", 1, "go")
		}
		poll.Eventually(t, "the dropped lines counted", func() bool {
			return gw.metric(`moongate_log_lines_dropped_total{function="chatty"}`) > 0
		})
		// 20 x 100 lines of 4 KiB is 8 MB; the function's rate (100 lines a second) lets
		// a second or two of them through.
		if grew := len(gw.c.out.String()) - before; grew > 2<<20 {
			t.Errorf("the log grew %d bytes in a flood of 8 MB", grew)
		}
		stillServing(t)
	})

	t.Run("10 endless headers, big values, many versions", func(t *testing.T) {
		// The sink's endpoint answers with one header line that never ends.
		publish(dev, "cloud/x", 1, "go")
		poll.Within(t, 30*time.Second, "the sink to fail on the header", func() bool {
			var doc struct {
				Sinks []struct {
					LastError string `json:"last_error"`
				} `json:"sinks"`
			}
			getJSON(t, gw.api()+"/api/v1/sync", &doc)
			return len(doc.Sinks) == 1 && strings.Contains(doc.Sinks[0].LastError, "header")
		})
		if rss := processRSS(t, gw); rss > 200<<20 {
			t.Errorf("RSS %d MiB while the sink reads an endless header", rss>>20)
		}
		publish(dev, "bigkv/x", 1, "go")
		resp, err := http.Get(gw.api() + "/api/v1/functions/bigkv/kv")
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n > 1<<20+64<<10 {
			t.Errorf("the KV listing of 4 values of 600 KB sent %d bytes, past its 1 MiB budget", n)
		}
		for i := range 60 {
			body := fmt.Sprintf(`{"source": "function handle(e) return %d end", "triggers": ["mqtt:v/x"]}`, i)
			req, _ := http.NewRequest("PUT", gw.api()+"/api/v1/functions/versions", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		var fn struct {
			Versions     []json.RawMessage `json:"versions"`
			VersionsMore bool              `json:"versions_more"`
		}
		getJSON(t, gw.api()+"/api/v1/functions/versions", &fn)
		if len(fn.Versions) > 20 || !fn.VersionsMore {
			t.Errorf("a function's page lists %d versions (more: %v), want 20 and more", len(fn.Versions), fn.VersionsMore)
		}
		stillServing(t)
	})

	t.Run("11 one stream's junk", func(t *testing.T) {
		for range 10 {
			publish(dev, "billing/x", 1, "go")
		}
		for range 1000 { // 2 MB of junk, past its stream's 256 KiB
			dev.Publish("junk/x", 0, false, "go")
		}
		poll.Within(t, 30*time.Second, "the junk to shed its own records", func() bool {
			return gw.metric(`moongate_outbox_dropped_total{cause="quota"}`) > 0
		})
		var doc struct {
			Unrouted []struct {
				Stream  string `json:"stream"`
				Pending int64  `json:"pending"`
			} `json:"unrouted"`
		}
		getJSON(t, gw.api()+"/api/v1/sync", &doc)
		billing := int64(0)
		for _, u := range doc.Unrouted {
			if u.Stream == "billing" {
				billing = u.Pending
			}
		}
		if billing != 10 {
			t.Errorf("billing holds %d of its 10 records after the junk stream's flood: %+v", billing, doc.Unrouted)
		}
		stillServing(t)
	})

	poll.Within(t, 30*time.Second, "the good function's count", func() bool {
		return gw.metric(`moongate_invocations_total{function="good",result="ok"}`) == float64(readings)
	})
	poll.Within(t, 30*time.Second, "the heap under the limit, no pressure", func() bool {
		return gw.metric("go_memstats_heap_alloc_bytes") < 64<<20 && gw.metric("moongate_memory_pressure") == 0
	})
	gw.stop()
}

// endlessHeaderServer answers every request with a header line that never ends.
func endlessHeaderServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.Write([]byte("HTTP/1.1 200 OK\r\nX-Endless: "))
				chunk := []byte(strings.Repeat("a", 64<<10))
				for {
					c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			})
		}
	})
	return "http://" + ln.Addr().String() + "/ingest"
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// processRSS is the gateway process's resident set, from /proc.
func processRSS(t *testing.T, gw *gatewayProc) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", gw.c.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
