package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/mqtt"
)

// startYAML is startTest for benchmarks too: an in-process gateway from a config text.
func startYAML(tb testing.TB, dir, yaml string) *testGateway {
	tb.Helper()
	cfg := loadYAML(tb, dir, yaml)
	if err := Check(cfg); err != nil {
		tb.Fatal(err)
	}
	return startTB(tb, cfg)
}

// startTB runs a gateway from a loaded config until the test (or benchmark) ends, on the
// config's listeners: tests give it loopback ports 0.
func startTB(tb testing.TB, cfg *config.Config) *testGateway {
	tb.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	g := New(cfg, Options{Version: "test", Logger: logger, RetryBackoff: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	tg := &testGateway{g: g, cancel: cancel, done: make(chan error, 1)}
	go func() { tg.done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-tg.done:
		tb.Fatalf("gateway stopped at start: %v", err)
	case <-time.After(20 * time.Second):
		tb.Fatal("gateway not ready")
	}
	tg.api = "http://" + g.HTTPAddr()
	if e, ok := g.bus.(*mqtt.Embedded); ok {
		tg.broker = "tcp://" + e.Addr()
	}
	tb.Cleanup(func() {
		if tg.cancel == nil { // stopped by the test
			return
		}
		tg.cancel()
		select {
		case err := <-tg.done:
			if err != nil {
				tb.Errorf("gateway run: %v", err)
			}
		case <-time.After(5 * time.Second):
			tb.Error("gateway did not stop within 5s")
		}
	})
	return tg
}

// liveClient is one console on the gateway's websocket: it reads and counts, or, stalled,
// reads nothing until resumed.
type liveClient struct {
	conn   *websocket.Conn
	resume chan struct{}
	once   sync.Once // closes resume
	done   chan struct{}

	mu      sync.Mutex
	byType  map[string]int64
	skipped int64 // the sum of the skipped markers' counts
	markers int
}

// dialLive connects a console. A stalled one starts reading only when resumed; its receive
// buffer is fixed at 64 KiB (no autotuning), so the gateway's socket fills early, while
// the window stays wide enough to catch up quickly once it reads.
func dialLive(tb testing.TB, tg *testGateway, stalled bool) *liveClient {
	tb.Helper()
	c := &liveClient{byType: map[string]int64{}, resume: make(chan struct{}), done: make(chan struct{})}
	d := &websocket.Dialer{}
	if stalled {
		d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				_ = conn.(*net.TCPConn).SetReadBuffer(64 << 10)
			}
			return conn, err
		}
	} else {
		c.once.Do(func() { close(c.resume) })
	}
	before := tg.g.hub.Stats().Clients
	conn, _, err := d.Dial("ws"+strings.TrimPrefix(tg.api, "http")+"/api/v1/live", nil)
	if err != nil {
		tb.Fatalf("dial live: %v", err)
	}
	c.conn = conn
	go c.read()
	tb.Cleanup(func() {
		conn.Close()
		c.once.Do(func() { close(c.resume) }) // a stalled reader then sees the closed conn
		<-c.done
	})
	for deadline := time.Now().Add(5 * time.Second); tg.g.hub.Stats().Clients <= before; {
		if time.Now().After(deadline) {
			tb.Fatal("live client not counted by the hub")
		}
		time.Sleep(time.Millisecond)
	}
	return c
}

func (c *liveClient) read() {
	defer close(c.done)
	<-c.resume
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		// Every message starts with its type (API_SHAPES.md); only the small skipped
		// markers are decoded, so the readers keep up with big payloads.
		var m struct {
			Type  string `json:"type"`
			Count int64  `json:"count"`
		}
		rest, ok := bytes.CutPrefix(data, []byte(`{"type":"`))
		if i := bytes.IndexByte(rest, '"'); ok && i > 0 {
			m.Type = string(rest[:i])
		}
		if m.Type == "skipped" && json.Unmarshal(data, &m) != nil {
			continue
		}
		c.mu.Lock()
		c.byType[m.Type]++
		if m.Type == "skipped" {
			c.skipped += m.Count
			c.markers++
		}
		c.mu.Unlock()
	}
}

func (c *liveClient) start() {
	c.once.Do(func() { close(c.resume) })
}

// accounted is every message the client got or was told it missed.
func (c *liveClient) accounted(types ...string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.skipped
	for _, t := range types {
		n += c.byType[t]
	}
	return n
}

// loadFunction counts events in KV and returns its payload, so that each event makes an
// invocation message as big as the event message.
const loadFunction = `
function handle(event)
  kv.incr("count")
  return {echo = event.payload}
end
`

const pureFunction = `
function handle(event)
  return {n = event.payload.n}
end
`

func loadConfig(dir, source string) string {
	os.WriteFile(filepath.Join(dir, "load.lua"), []byte(source), 0o644)
	return baseConfig(dir, `functions:
  - {name: load, source: load.lua, triggers: ["mqtt:load/+"], concurrency: 4}
`)
}

// publisher pushes events through the embedded broker in process, as a device's messages
// arrive, keeping at most window of them unprocessed so QoS 0 events are never dropped
// for a full queue (that would measure the queue, not the gateway).
type publisher struct {
	tg      *testGateway
	st      *fnStats
	payload func(i int) []byte
	sent    int64
}

func newPublisher(tg *testGateway, payload func(i int) []byte) *publisher {
	return &publisher{tg: tg, st: &tg.g.registry.entry("load").stats, payload: payload}
}

func (p *publisher) publish(tb testing.TB, n int) {
	tb.Helper()
	const window = 2048
	ctx := context.Background()
	for range n {
		for p.sent-p.st.invocations.Load() >= window {
			time.Sleep(50 * time.Microsecond)
		}
		topic := fmt.Sprintf("load/k%d", p.sent%8)
		if err := p.tg.g.bus.Publish(ctx, topic, p.payload(int(p.sent)), 0, false); err != nil {
			tb.Fatal(err)
		}
		p.sent++
	}
}

func (p *publisher) wait(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for p.st.invocations.Load() < p.sent {
		if time.Now().After(deadline) {
			tb.Fatalf("processed %d of %d events", p.st.invocations.Load(), p.sent)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// A console that stops reading does not slow or stop the gateway: every event is still
// processed and committed, the stalled console is told what it missed ("skipped"
// markers), and every console, stalled or not, can account for every message: what it
// received plus what it was told it skipped.
func TestStalledConsoleKeepsGatewayRunning(t *testing.T) {
	dir := t.TempDir()
	tg := startYAML(t, dir, loadConfig(dir, loadFunction))
	var readers []*liveClient
	for range 4 {
		readers = append(readers, dialLive(t, tg, false))
	}
	stalled := dialLive(t, tg, true)

	// 15 KB payloads (the live stream cuts at 16 KiB) fill the stalled socket's buffers
	// (4 MiB of kernel send buffer at most) well within the 1000 messages a second each
	// console is sent, so its queue overflows, besides what the rate cap skips.
	payload := []byte(`"` + strings.Repeat("p", 15000) + `"`)
	p := newPublisher(tg, func(int) []byte { return payload })
	p.publish(t, 2000)
	p.wait(t)
	n := p.sent

	// Every event ran and committed, in spite of the stalled console.
	var count int64
	poll.Eventually(t, "every invocation committed", func() bool {
		return kvJSON(t, tg, "load", "count", &count) && count == n
	})
	if st := &tg.g.registry.entry("load").stats; st.errors.Load() != 0 {
		t.Errorf("%d failed invocations", st.errors.Load())
	}

	// Each event is one event message and one invocation message per console.
	for i, r := range readers {
		poll.Eventually(t, fmt.Sprintf("reader %d to account for every message", i), func() bool {
			return r.accounted("event", "invocation") == 2*n
		})
	}
	stalled.start()
	poll.Eventually(t, "the stalled console to account for every message", func() bool {
		return stalled.accounted("event", "invocation") == 2*n
	})
	stalled.mu.Lock()
	defer stalled.mu.Unlock()
	if stalled.markers == 0 || stalled.skipped == 0 {
		t.Fatalf("the stalled console got no skipped marker: %v", stalled.byType)
	}
	got := stalled.byType["event"] + stalled.byType["invocation"]
	var most int64
	for _, r := range readers {
		r.mu.Lock()
		most = max(most, r.byType["event"]+r.byType["invocation"])
		r.mu.Unlock()
	}
	t.Logf("%d events; the readers received up to %d messages, the stalled console %d and %d skipped markers for %d dropped ones",
		n, most, got, stalled.markers, stalled.skipped)
	// The readers lose only what the rate cap skips; the stalled console loses more, to
	// its full queue: the stall was real.
	if got >= most {
		t.Errorf("the stalled console received %d messages, a reader %d: it did not stall", got, most)
	}
	if hub := tg.g.hub.Stats().Skipped; uint64(stalled.skipped) > hub {
		t.Errorf("the stalled console was told of %d skipped messages, the hub dropped %d in all", stalled.skipped, hub)
	}
}

// BenchmarkThroughputConsoles measures the events per second the gateway processes, from
// the broker to a finished invocation, with no console attached and with five (four
// reading, one stalled). Events go through the embedded broker in process.
//
//	go test -run '^$' -bench 'ThroughputConsoles/fn=pure' -benchtime 300000x ./gateway
//	go test -run '^$' -bench 'ThroughputConsoles/fn=kv' -benchtime 30000x ./gateway
func BenchmarkThroughputConsoles(b *testing.B) {
	fns := []struct{ name, source string }{
		{"fn=pure", pureFunction}, // no effects, no commit: the console's share is largest
		{"fn=kv", loadFunction},   // one KV write per event, group-committed with fsync
	}
	for _, fn := range fns {
		for _, clients := range []int{0, 5} {
			b.Run(fmt.Sprintf("%s/clients=%d", fn.name, clients), func(b *testing.B) {
				dir := b.TempDir()
				tg := startYAML(b, dir, loadConfig(dir, fn.source))
				if clients > 0 {
					for range clients - 1 {
						dialLive(b, tg, false)
					}
					dialLive(b, tg, true)
				}
				p := newPublisher(tg, func(i int) []byte {
					return fmt.Appendf(nil, `{"n":%d,"temp":21.5,"humidity":40.2,"battery":3.01}`, i)
				})
				p.publish(b, 500) // warm the VMs
				p.wait(b)
				skipped := tg.g.hub.Stats().Skipped
				b.ResetTimer()
				start, cpu := time.Now(), cpuTime()
				p.publish(b, b.N)
				p.wait(b)
				elapsed, cpu := time.Since(start), cpuTime()-cpu
				b.StopTimer()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
				// CPU per event (the whole process: gateway, publisher and consoles) is the
				// steadier figure on a machine shared with other work.
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/event")
				b.ReportMetric(float64(tg.g.hub.Stats().Skipped-skipped)/float64(b.N), "skipped/event")
			})
		}
	}
}

// cpuTime is the user and system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
