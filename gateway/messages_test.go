package gateway

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/gateway/console"
	"github.com/moongate/moongate/internal/poll"
)

// lockedBuffer is a log sink the gateway's goroutines write to while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// loadYAML writes a config text to dir and loads it.
func loadYAML(tb testing.TB, dir, yaml string) *config.Config {
	tb.Helper()
	path := filepath.Join(dir, "moongate.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// No message repeats its own prefix: a broker that cannot listen says "embedded broker"
// once, a console that cannot listen names its address once, a sink's log lines and
// errors name it and its address once, and a deploy refused for its source gives the
// place once, in "line", so the console and the CLI can put it in front.
func TestMessagesDoNotRepeatTheirPrefix(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	cfg := loadYAML(t, dir, baseConfig(dir, ""))
	cfg.MQTT.Embedded.Listen = taken.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = New(cfg, Options{Logger: slog.New(slog.DiscardHandler)}).Run(ctx)
	if err == nil || strings.Count(err.Error(), "embedded broker") != 1 {
		t.Errorf("broker on a taken port: %v", err)
	}
	cfg = loadYAML(t, dir, baseConfig(dir, ""))
	cfg.Gateway.Console.Listen = taken.Addr().String()
	err = New(cfg, Options{Logger: slog.New(slog.DiscardHandler)}).Run(ctx)
	if err == nil || strings.Count(err.Error(), taken.Addr().String()) != 1 || !strings.HasPrefix(err.Error(), "console: ") {
		t.Errorf("console on a taken port: %v", err)
	}

	// A sink that cannot deliver: its log lines, and a function's invocation.
	dir = t.TempDir()
	cfg = loadYAML(t, dir, baseConfig(dir, `sync:
  sinks:
    - name: cloud
      http: {url: "http://127.0.0.1:1/ingest", timeout: 1s}
`))
	logs := &lockedBuffer{}
	g := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), RetryBackoff: time.Millisecond})
	runCtx, stop := context.WithCancel(context.Background())
	tg := &testGateway{g: g, cancel: stop, done: make(chan error, 1)}
	go func() { tg.done <- g.Run(runCtx) }()
	<-g.Ready()
	defer tg.stop(t)
	tg.api = "http://" + g.HTTPAddr()
	put := func(name, source string) apiResult {
		return call(t, "PUT", tg.api+"/api/v1/functions/"+name, "", map[string]any{"source": source})
	}
	put("emitter", "function handle(event)\n  cloud.emit(\"s\", {x = 1})\nend\n")
	call(t, "POST", tg.api+"/api/v1/functions/emitter/invoke", "", map[string]any{})
	poll.Eventually(t, "the sink to log its state", func() bool { return strings.Contains(logs.String(), `msg="sink state"`) })
	if strings.Contains(logs.String(), "sink=cloud sink=cloud") {
		t.Errorf("a sink's log line names it twice:\n%s", grepLines(logs.String(), "sink=cloud sink=cloud"))
	}
	var lastErr string
	poll.Eventually(t, "the sink's last error", func() bool {
		sinks, _ := call(t, "GET", tg.api+"/api/v1/sync", "", nil).body["sinks"].([]any)
		lastErr, _ = sinks[0].(map[string]any)["last_error"].(string)
		return lastErr != ""
	})
	if strings.Count(lastErr, "127.0.0.1:1") != 1 {
		t.Errorf("the sink's error names the address more than once: %q", lastErr)
	}

	for _, c := range []struct {
		source, error string
		line          int
	}{
		{"function handle(e)\n  return e.x +\nend\n", "syntax error near 'end'", 3},
		{"local t0 = os.clock()\nfunction handle(e) end\n",
			"os is not available in the sandbox; time.now() gives the time in unix ms (attempt to index a non-table object(nil) with key 'clock')", 1},
	} {
		r := put("broken", c.source)
		if r.status != http.StatusBadRequest || r.body["error"] != c.error || r.body["line"] != float64(c.line) {
			t.Errorf("refused deploy of %q: %d %s", c.source, r.status, r.raw)
		}
	}
}

// The gateway keeps the last readings of each sensor (within historyAge, at most
// historyReadings) and the last sink transitions, and serves them in the live shapes.
func TestHistoryIsBoundedAndServed(t *testing.T) {
	var h history
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC).UnixMilli()
	for i := range 700 { // one a second: the count bounds
		h.sensor(console.Sensor{TS: t0 + int64(i)*1000, Sensor: "fast", Values: map[string]float64{"v": float64(i)}})
	}
	for i := range 240 { // one every 5 s over 20 minutes: the age bounds
		h.sensor(console.Sensor{TS: t0 + int64(i)*5000, Sensor: "slow", Values: map[string]float64{"v": float64(i)}})
	}
	for i := range 150 {
		h.sync(console.Sync{TS: t0 + int64(i), Sink: "cloud", State: fmt.Sprint(i)})
	}
	now := time.UnixMilli(t0 + 239*5000)
	readings, transitions := h.messages(now)
	by := map[string][]console.Sensor{}
	for _, m := range readings {
		r := m.(console.Sensor)
		by[r.Sensor] = append(by[r.Sensor], r)
	}
	// Now is 1195 s after t0: fast's readings from 595 s on are younger than 10 minutes.
	if n := len(by["fast"]); n != 105 || by["fast"][0].Values["v"] != 595 {
		t.Errorf("fast: %d readings within the age", n)
	}
	if n := len(by["slow"]); n != 121 || by["slow"][0].Values["v"] != 119 || by["slow"][n-1].Values["v"] != 239 {
		t.Errorf("slow: %d readings, from %v", n, by["slow"][0].Values)
	}
	readings, _ = h.messages(time.UnixMilli(t0 + 699*1000))
	if n := len(readings) - 121; n != historyReadings {
		t.Errorf("fast: %d readings kept, want %d", n, historyReadings)
	}
	if len(transitions) != historyTransitions || transitions[0].(console.Sync).State != "50" {
		t.Errorf("%d transitions, first %+v", len(transitions), transitions[0])
	}

	// Served by the API, from a running gateway's sensor and sink.
	dir := t.TempDir()
	tg := startYAML(t, dir, baseConfig(dir, `sensors:
  sim-1: {driver: sim, every: 20ms, values: {temp: "20+t"}}
sync:
  sinks:
    - name: cloud
      http: {url: "http://127.0.0.1:1/ingest", timeout: 1s}
`))
	call(t, "PUT", tg.api+"/api/v1/functions/emitter", "", map[string]any{"source": "function handle(event)\n  cloud.emit(\"s\", {x = 1})\nend\n"})
	call(t, "POST", tg.api+"/api/v1/functions/emitter/invoke", "", map[string]any{})
	var r apiResult
	poll.Eventually(t, "readings and a transition in the history", func() bool {
		r = call(t, "GET", tg.api+"/api/v1/history", "", nil)
		s, _ := r.body["sensor"].([]any)
		y, _ := r.body["sync"].([]any)
		return len(s) >= 3 && len(y) >= 1
	})
	first := r.body["sensor"].([]any)[0].(map[string]any)
	if first["type"] != "sensor" || first["sensor"] != "sim-1" || first["values"].(map[string]any)["temp"] == nil {
		t.Errorf("history reading %v", first)
	}
	if tr := r.body["sync"].([]any)[0].(map[string]any); tr["type"] != "sync" || tr["sink"] != "cloud" || tr["state"] == "" {
		t.Errorf("history transition %v", tr)
	}
}
