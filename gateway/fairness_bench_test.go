package gateway

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/mqtt"
)

// envSeconds reads a duration in seconds from the environment, for benchmark phases.
func envSeconds(tb testing.TB, name string, def int) time.Duration {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			tb.Fatalf("%s=%q: want a number of seconds", name, v)
		}
		return time.Duration(n) * time.Second
	}
	return time.Duration(def) * time.Second
}

// BenchmarkFloodNeighbour measures what one device flooding the embedded broker costs ten
// well-behaved ones: each sends a QoS 1 reading ten times a second, and the figure is the
// time to its PUBACK (which the gateway sends after the invocation committed), first alone,
// then beside a device publishing QoS 0 as fast as it can. Run it on its own:
//
//	go test -run '^$' -bench FloodNeighbour -benchtime 1x ./gateway
//
// The phases last MOONGATE_FLOOD_SECONDS each (default 5).
func BenchmarkFloodNeighbour(b *testing.B) {
	dir := b.TempDir()
	writeFile(b, dir, "count.lua", `function handle(e) kv.incr(e.topic) end`)
	tg := startYAML(b, dir, baseConfig(dir, `functions:
  - {name: count, source: count.lua, triggers: ["mqtt:sensors/+/temp@1"]}
`))
	phase := envSeconds(b, "MOONGATE_FLOOD_SECONDS", 5)
	connect := func(id string) paho.Client {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID(id).SetProtocolVersion(4))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("connect %s: %v", id, tok.Error())
		}
		b.Cleanup(func() { c.Disconnect(50) })
		return c
	}
	calm := make([]paho.Client, 10)
	for i := range calm {
		calm[i] = connect(fmt.Sprintf("calm-%d", i))
	}
	measure := func() (p50, p99 time.Duration, n int) {
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		for i, c := range calm {
			wg.Go(func() {
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for end := time.Now().Add(phase); time.Now().Before(end); <-tick.C {
					start := time.Now()
					tok := c.Publish(fmt.Sprintf("sensors/calm-%d/temp", i), 1, false, `{"temp":21.5}`)
					if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
						b.Errorf("calm-%d: %v", i, tok.Error())
						return
					}
					mu.Lock()
					lat = append(lat, time.Since(start))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		if len(lat) == 0 {
			b.Fatal("no latency measured")
		}
		return lat[len(lat)/2], lat[len(lat)*99/100], len(lat)
	}
	b.ResetTimer()
	p50, p99, n := measure()
	b.ReportMetric(float64(p50.Microseconds())/1000, "calm-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "calm-p99-ms")

	flood := connect("flood")
	ctx, stop := context.WithCancel(context.Background())
	var flooded sync.WaitGroup
	sent := 0
	flooded.Go(func() {
		for ctx.Err() == nil {
			flood.Publish("sensors/flood/temp", 0, false, `{"temp":99}`)
			sent++
		}
	})
	time.Sleep(500 * time.Millisecond) // let the flood reach its pace
	accepted := func() uint64 {
		for _, d := range tg.g.bus.(*mqtt.Embedded).Devices() {
			if d.ClientID == "flood" {
				return d.Received
			}
		}
		return 0
	}
	before := accepted()
	fp50, fp99, fn := measure()
	took := accepted() - before
	stop()
	flooded.Wait()
	b.ReportMetric(float64(fp50.Microseconds())/1000, "flood-calm-p50-ms")
	b.ReportMetric(float64(fp99.Microseconds())/1000, "flood-calm-p99-ms")
	b.ReportMetric(float64(took)/phase.Seconds(), "flood-accepted/s")
	b.Logf("calm alone: %d readings, p50 %v p99 %v; beside the flood: %d readings, p50 %v p99 %v; the broker took %d of the flood's %d publishes",
		n, p50, p99, fn, fp50, fp99, took, sent)
}
