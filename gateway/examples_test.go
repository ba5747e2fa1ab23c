package gateway

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/poll"
)

// exampleConfigs are the configs under examples/, each checked as `moongate check -c` does.
func exampleConfigs(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("..", "examples", "*", "moongate*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no example configs found: %v", err)
	}
	return paths
}

// loadChecked is `moongate check -c path`: load, validate, compile every function.
func loadChecked(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("moongate check -c %s: %v", path, err)
	}
	if err := Check(cfg); err != nil {
		t.Fatalf("moongate check -c %s: %v", path, err)
	}
	return cfg
}

// Every example config passes `moongate check`. The Pi configs send to ${CLOUD_URL}, which
// their READMEs ask to set.
func TestExampleConfigsCheck(t *testing.T) {
	t.Setenv("CLOUD_URL", "https://cloud.example.invalid/ingest")
	paths := exampleConfigs(t)
	for _, want := range []string{"weather-station/moongate.yaml", "weather-station/moongate.sim.yaml",
		"button-relay/moongate.yaml", "button-relay/moongate.sim.yaml"} {
		found := false
		for _, p := range paths {
			found = found || strings.HasSuffix(filepath.ToSlash(p), want)
		}
		if !found {
			t.Errorf("examples/%s is missing", want)
		}
	}
	for _, p := range paths {
		cfg := loadChecked(t, p)
		if len(cfg.Functions) == 0 {
			t.Errorf("%s: no functions", p)
		}
	}
}

// freeAddr reserves a loopback port for a listener that a config must name before it starts
// (a sink that connects to the embedded broker needs its address in advance).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// onLoopback moves a loaded config onto loopback test ports and a temporary data dir,
// leaving everything else (sensors, functions, sinks) as the example has it.
func onLoopback(t *testing.T, cfg *config.Config) {
	cfg.Gateway.DataDir = t.TempDir()
	cfg.Gateway.Console.Listen = "127.0.0.1:0"
	cfg.Gateway.Console.Token = ""
	cfg.MQTT.Embedded.Listen = "127.0.0.1:0"
}

// startConfig runs a gateway in-process from an already loaded config until the test ends.
func startConfig(t *testing.T, cfg *config.Config) *testGateway { return startTB(t, cfg) }

// collector subscribes a device to filters and keeps what arrives, by topic.
type collector struct {
	mu   sync.Mutex
	msgs map[string][][]byte
}

func subscribe(t *testing.T, broker, id string, filters ...string) *collector {
	t.Helper()
	c := &collector{msgs: map[string][][]byte{}}
	cli := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(id))
	if tok := cli.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { cli.Disconnect(100) })
	for _, f := range filters {
		tok := cli.Subscribe(f, 1, func(_ paho.Client, m paho.Message) {
			c.mu.Lock()
			c.msgs[m.Topic()] = append(c.msgs[m.Topic()], m.Payload())
			c.mu.Unlock()
		})
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", f, tok.Error())
		}
	}
	return c
}

func (c *collector) on(topic string) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.msgs[topic]...)
}

// sinkRecord is one record as the MQTT sink bridges it.
type sinkRecord struct {
	Gateway  string          `json:"gateway"`
	Stream   string          `json:"stream"`
	ID       string          `json:"id"`
	Function string          `json:"function"`
	Data     json.RawMessage `json:"data"`
}

func kvJSON(t *testing.T, tg *testGateway, fn, key string, v any) bool {
	t.Helper()
	b, ok, err := tg.g.store.KVGet(fn, key)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return false
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("kv %s/%s = %s: %v", fn, key, b, err)
	}
	return true
}

// The weather station on a laptop, as its README runs it: the simulated sensor's readings
// reach the function, which keeps the rolling window in KV and emits every reading, which
// the sink bridges to the "cloud" (the embedded broker). Hot readings raise one alert, on
// the alerts stream and the retained alert topic.
func TestExampleWeatherStation(t *testing.T) {
	cfg := loadChecked(t, filepath.Join("..", "examples", "weather-station", "moongate.sim.yaml"))
	onLoopback(t, cfg)
	addr := freeAddr(t)
	cfg.MQTT.Embedded.Listen = addr
	if len(cfg.Sync.Sinks) != 1 || cfg.Sync.Sinks[0].MQTT == nil {
		t.Fatalf("the sim config should bridge to the local broker: %+v", cfg.Sync.Sinks)
	}
	cfg.Sync.Sinks[0].MQTT.Broker = "tcp://" + addr
	cfg.Sync.Sinks[0].Batch.Linger = 10 * time.Millisecond
	tg := startConfig(t, cfg)
	cloud := subscribe(t, tg.broker, "cloud-watcher", "cloud/#", "weather/#")
	gw := cfg.Gateway.ID

	// A simulated reading (every 2 s) goes all the way to the cloud topic.
	var rec sinkRecord
	poll.Eventually(t, "a reading bridged to cloud/"+gw+"/weather", func() bool {
		got := cloud.on("cloud/" + gw + "/weather")
		if len(got) == 0 {
			return false
		}
		if err := json.Unmarshal(got[0], &rec); err != nil {
			t.Fatalf("bridged record %s: %v", got[0], err)
		}
		return true
	})
	var data map[string]float64
	if err := json.Unmarshal(rec.Data, &data); err != nil || rec.Function != "weather" || rec.Stream != "weather" || rec.Gateway != gw {
		t.Fatalf("record %+v: %v", rec, err)
	}
	temp := data["temp_c"]
	if temp < 20 || temp > 34 || data["humidity"] < 44 || data["humidity"] > 66 || data["pressure_hpa"] < 1010 || data["pressure_hpa"] > 1016 {
		t.Errorf("first reading out of the simulated ranges: %s", rec.Data)
	}
	if data["avg_c"] != temp {
		t.Errorf("the first reading's average is itself: %s", rec.Data)
	}
	var window []float64
	if !kvJSON(t, tg, "weather", "window", &window) || len(window) == 0 || window[0] != temp {
		t.Fatalf("kv window %v, first reading %v", window, temp)
	}

	// Hot readings push the average over ALERT_C: one alert, however many readings follow.
	fn := tg.api + "/api/v1/functions/weather"
	for i := range 12 {
		r := call(t, "POST", fn+"/invoke", "", map[string]any{"source": "sensor", "sensor": "outside",
			"values": map[string]float64{"temp": 45, "humidity": 50, "pressure": 1000}})
		if r.status != http.StatusOK || r.body["error"] != nil {
			t.Fatalf("invoke %d: %d %s", i, r.status, r.raw)
		}
	}
	if !kvJSON(t, tg, "weather", "window", &window) || len(window) != 10 {
		t.Errorf("the window keeps the last 10 readings: %v", window)
	}
	var hot bool
	if !kvJSON(t, tg, "weather", "hot", &hot) || !hot {
		t.Errorf("kv hot = %v after 12 readings at 45 °C", hot)
	}
	poll.Eventually(t, "the alert bridged to the cloud and retained on weather/"+gw+"/alert", func() bool {
		return len(cloud.on("cloud/"+gw+"/alerts")) > 0 && len(cloud.on("weather/"+gw+"/alert")) > 0
	})
	var alert sinkRecord
	json.Unmarshal(cloud.on("cloud/" + gw + "/alerts")[0], &alert)
	var a struct {
		Hot    bool    `json:"hot"`
		AvgC   float64 `json:"avg_c"`
		LimitC float64 `json:"limit_c"`
		Sensor string  `json:"sensor"`
	}
	if err := json.Unmarshal(alert.Data, &a); err != nil || !a.Hot || a.AvgC <= 30 || a.LimitC != 30 || a.Sensor != "outside" {
		t.Errorf("alert record %s: %v", alert.Data, err)
	}
	// The simulated readings (at most 33 °C) need several readings to bring the average of
	// ten back under 30, so within this test the alert fired exactly once.
	hotAlerts := 0
	for _, m := range cloud.on("cloud/" + gw + "/alerts") {
		var r sinkRecord
		json.Unmarshal(m, &r)
		if strings.Contains(string(r.Data), `"hot":true`) {
			hotAlerts++
		}
	}
	if hotAlerts != 1 {
		t.Errorf("%d hot alerts for one crossing", hotAlerts)
	}
	// A device connecting later still sees the state: the alert is retained.
	late := subscribe(t, tg.broker, "late-dashboard", "weather/#")
	poll.Eventually(t, "the retained alert", func() bool { return len(late.on("weather/"+gw+"/alert")) > 0 })
}

// The button and relay on a laptop: presses of the simulated button (through the API the
// console's Press button uses) toggle the simulated relay pin, with the state in KV.
func TestExampleButtonRelay(t *testing.T) {
	cfg := loadChecked(t, filepath.Join("..", "examples", "button-relay", "moongate.sim.yaml"))
	onLoopback(t, cfg)
	tg := startConfig(t, cfg)

	relay := func() int {
		lvl, err := tg.g.pins.ReadPin("relay")
		if err != nil {
			t.Fatal(err)
		}
		return lvl
	}
	if relay() != 0 {
		t.Fatalf("relay starts at %d, initial: 0", relay())
	}
	press := func() {
		t.Helper()
		for _, lvl := range []int{0, 1} { // pull-up wiring: pressed is low
			if r := call(t, "POST", tg.api+"/api/v1/gpio/GPIO17", "", map[string]int{"level": lvl}); r.status != http.StatusNoContent {
				t.Fatalf("gpio level %d: %d %s", lvl, r.status, r.raw)
			}
		}
	}
	for n := 1; n <= 3; n++ {
		press()
		wantOn := n%2 == 1
		poll.Eventually(t, fmt.Sprintf("press %d toggling the relay", n), func() bool {
			var presses int
			var on bool
			return kvJSON(t, tg, "toggle", "presses", &presses) && presses == n &&
				kvJSON(t, tg, "toggle", "on", &on) && on == wantOn && relay() == map[bool]int{true: 1, false: 0}[wantOn]
		})
		// The button's debounce (50 ms) would fold a press that follows too closely into
		// the lock-out of the last release; a person does not press that fast.
		time.Sleep(120 * time.Millisecond)
	}

	// The relay's level is what the status API (and the console's relay card) shows.
	r := call(t, "GET", tg.api+"/api/v1/status", "", nil)
	found := false
	for _, s := range r.body["sensors"].([]any) {
		s := s.(map[string]any)
		if s["name"] != "relay" {
			continue
		}
		found = true
		if v, _ := s["values"].(map[string]any); v == nil || v["level"] != float64(1) {
			t.Errorf("status of the relay after 3 presses: %v", s)
		}
	}
	if !found {
		t.Errorf("no relay in the status: %s", r.raw)
	}

	// An output is not a button: the API refuses to press it.
	if r := call(t, "POST", tg.api+"/api/v1/gpio/relay", "", map[string]int{"level": 0}); r.status != http.StatusBadRequest {
		t.Errorf("pressing the relay output: %d %s", r.status, r.raw)
	}
}
