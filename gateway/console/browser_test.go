package console_test

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moongate/moongate/gateway/console"
	"github.com/moongate/moongate/gateway/console/consoletest"
	"github.com/moongate/moongate/internal/poll"
)

const testToken = "t0k3n-Abc_123"

// fakeAPI is the part of the gateway's HTTP API (API_SHAPES.md) the console calls,
// kept in memory. The real API has its own tests; this one lets the UI be driven alone.
type fakeAPI struct {
	hub  *console.Hub
	open bool // no token needed, as on a loopback listener without one

	mu        sync.Mutex
	fns       map[string]map[string]any
	deploys   []map[string]any
	invokes   []map[string]any
	rollbacks []map[string]any
}

func newFakeAPI(hub *console.Hub) *fakeAPI {
	created := time.Now().Add(-26 * time.Hour).UTC().Format(time.RFC3339)
	return &fakeAPI{hub: hub, fns: map[string]map[string]any{
		"temp-alert": {
			"name": "temp-alert", "version": 2, "source": "function handle(event)\n  return event.payload\nend\n",
			"triggers": []string{"mqtt:sensors/+/temp", "sensor:kitchen"}, "timeout": "100ms", "memory": "16MiB",
			"concurrency": 2, "env": map[string]string{"THRESHOLD": "30"}, "emit": "alerts", "created": created,
			"counters": map[string]any{"invocations": 1843, "errors": 3, "duration_us_sum": 1843 * 640},
			"versions": []map[string]any{
				{"version": 2, "created": created, "size": 44},
				{"version": 1, "created": time.Now().Add(-72 * time.Hour).UTC().Format(time.RFC3339), "size": 40},
			},
		},
		"door-alarm": {
			"name": "door-alarm", "version": 1, "source": "function handle(e) end\n", "triggers": []string{"gpio:GPIO17:falling:50ms"},
			"timeout": "50ms", "memory": "8MiB", "concurrency": 1, "env": map[string]string{}, "emit": "", "created": created,
			"counters": map[string]any{"invocations": 12, "errors": 0, "duration_us_sum": 12 * 300},
			"versions": []map[string]any{{"version": 1, "created": created, "size": 23}},
		},
	}}
}

func (f *fakeAPI) authorized(r *http.Request) bool {
	return f.open || subtle.ConstantTimeCompare([]byte(console.BearerToken(r)), []byte(testToken)) == 1
}

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	api := http.NewServeMux()
	mux.Handle("/", console.Handler())
	mux.Handle("/api/v1/live", f.hub)
	mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.authorized(r) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			reply(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
			return
		}
		api.ServeHTTP(w, r)
	}))
	api.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, map[string]any{"version": "0.1.0", "gateway_id": "pi-kitchen", "uptime_s": 273840,
			"broker":       map[string]any{"state": "running", "addr": "0.0.0.0:1883", "clients": 4},
			"outbox_depth": 17, "memory_bytes": 38 << 20, "functions": 2})
	})
	api.HandleFunc("GET /api/v1/functions", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		list := []map[string]any{}
		for _, name := range []string{"door-alarm", "temp-alert"} {
			list = append(list, f.fns[name])
		}
		reply(w, 200, map[string]any{"functions": list})
	})
	api.HandleFunc("GET /api/v1/functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		fn, ok := f.fns[r.PathValue("name")]
		if !ok {
			reply(w, 404, map[string]string{"error": "no such function"})
			return
		}
		reply(w, 200, fn)
	})
	api.HandleFunc("PUT /api/v1/functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			reply(w, 400, map[string]string{"error": err.Error()})
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.deploys = append(f.deploys, body)
		src, _ := body["source"].(string)
		// The stand-in compiler rejects "===", at its line, as gopher-lua would.
		for i, line := range strings.Split(src, "\n") {
			if strings.Contains(line, "===") {
				reply(w, 400, map[string]any{"error": fmt.Sprintf("%s:%d: unexpected symbol near '='", r.PathValue("name"), i+1), "line": i + 1})
				return
			}
		}
		status, fn := 200, f.fns[r.PathValue("name")]
		if fn == nil {
			status, fn = 201, map[string]any{"name": r.PathValue("name"), "version": 0, "versions": []map[string]any{}}
			f.fns[r.PathValue("name")] = fn
		}
		for k, v := range body {
			fn[k] = v
		}
		v := fn["version"].(int) + 1
		fn["version"] = v
		fn["versions"] = append([]map[string]any{{"version": v, "created": time.Now().UTC().Format(time.RFC3339), "size": len(src)}},
			fn["versions"].([]map[string]any)...)
		reply(w, status, fn)
	})
	api.HandleFunc("POST /api/v1/functions/{name}/invoke", func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]any
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			reply(w, 400, map[string]string{"error": err.Error()})
			return
		}
		f.mu.Lock()
		f.invokes = append(f.invokes, ev)
		version := f.fns[r.PathValue("name")]["version"].(int)
		f.mu.Unlock()
		result, _ := json.Marshal(map[string]any{"echo": ev["payload"], "alert": true})
		f.hub.Publish(console.Invocation{Function: r.PathValue("name"), Version: version, EventID: "01JTEST",
			DurationUS: 742, Result: result})
		payload, _ := json.Marshal(ev["payload"])
		res := map[string]any{"result": json.RawMessage(result), "logs": []map[string]string{{"level": "info", "msg": fmt.Sprintf("payload %s on %v", payload, ev["topic"])}},
			"error": "", "duration_us": 742, "version": version, "event_id": "01JTEST"}
		if r.URL.Query().Get("dry_run") == "1" { // the shape the gateway's dry run answers
			res["dry_run"] = true
			res["would"] = map[string]any{
				"kv":        []map[string]any{{"key": "count", "value": 1844}, {"key": "old", "deleted": true}},
				"emits":     []map[string]any{{"stream": "alerts", "data": map[string]any{"temp": 31.5}}},
				"publishes": []map[string]any{{"topic": "alerts/hot", "payload": `{"temp":31.5}`, "qos": 1, "retain": false}},
				"gpio":      []map[string]any{{"pin": "GPIO27", "level": 1}},
			}
		}
		reply(w, 200, res)
	})
	api.HandleFunc("POST /api/v1/functions/{name}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.rollbacks = append(f.rollbacks, body)
		fn := f.fns[r.PathValue("name")]
		v := fn["version"].(int) + 1
		fn["version"] = v
		fn["versions"] = append([]map[string]any{{"version": v, "created": time.Now().UTC().Format(time.RFC3339), "size": 40, "rollback_of": body["version"]}},
			fn["versions"].([]map[string]any)...)
		reply(w, 200, fn)
	})
	api.HandleFunc("GET /api/v1/functions/{name}/kv", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, map[string]any{"items": []map[string]any{
			{"key": "count", "value": 1843},
			{"key": "last", "value": map[string]any{"temp": 31.5, "topic": "sensors/kitchen/temp"}},
		}, "truncated": false})
	})
	api.HandleFunc("GET /api/v1/sync", func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UTC()
		reply(w, 200, map[string]any{
			"sinks": []map[string]any{
				{"name": "cloud", "state": "ok", "streams": []string{"*"}, "last_success": now.Add(-2 * time.Second).Format(time.RFC3339),
					"lag_ms": 850, "pending": 3, "delivered": 48213, "dropped": 0},
				{"name": "iot-core", "state": "backoff", "streams": []string{"telemetry"}, "last_success": now.Add(-7 * time.Minute).Format(time.RFC3339),
					"last_error": "dial tcp: lookup example.invalid: no such host", "last_error_at": now.Add(-4 * time.Second).Format(time.RFC3339),
					"lag_ms": 421000, "pending": 14, "delivered": 9120, "dropped": 0},
			},
			"outbox": map[string]any{"pending": 17, "bytes": 20480, "max_bytes": 256 << 20, "dropped": 0},
		})
	})
	return mux
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// feed publishes what a busy gateway would, so the views and screenshots have content.
func feed(hub *console.Hub) {
	t0 := time.Now().Add(-40 * time.Second).UnixMilli()
	for i := range 40 {
		ts := t0 + int64(i)*1000
		temp := 21 + 4*math.Sin(float64(i)/6)
		hub.Publish(console.Sensor{TS: ts, Sensor: "kitchen", Values: map[string]float64{"temp": temp, "humidity": 41 + 3*math.Cos(float64(i)/5)}})
		hub.Publish(console.Sensor{TS: ts, Sensor: "sim-1", Values: map[string]float64{"temp": 20 + 5*math.Sin(float64(i)/9)}})
		hub.Publish(console.Event{TS: ts, ID: fmt.Sprintf("01JD%04d", i), Source: "mqtt", Topic: fmt.Sprintf("sensors/room%d/temp", i%3),
			Payload: fmt.Appendf(nil, `{"temp":%.1f,"battery":3.01}`, temp), QoS: 1})
		inv := console.Invocation{TS: ts + 1, Function: "temp-alert", Version: 2, EventID: fmt.Sprintf("01JD%04d", i),
			DurationUS: int64(450 + 300*math.Abs(math.Sin(float64(i)/4)) + float64(i%7)*40), Result: []byte(`{"alert":false}`)}
		if i%13 == 12 {
			inv.Error, inv.Result = "handle:4: attempt to index a nil value (field 'payload')", nil
		}
		hub.Publish(inv)
		if i%8 == 0 {
			hub.Publish(console.Log{TS: ts + 1, Function: "temp-alert", Level: "warn", Msg: fmt.Sprintf("room%d is warm: %.1f", i%3, temp)})
		}
	}
	hub.Publish(console.Sync{Sink: "iot-core", State: "backoff", Error: "dial tcp: lookup example.invalid: no such host", LagMS: 421000, Pending: 14})
	hub.Publish(console.Invocation{Function: "door-alarm", Version: 1, EventID: "01JDGPIO", DurationUS: 310, Result: []byte(`null`)})
	hub.Publish(console.Firmware{Device: "esp32-hall", Version: "1.2.0", Status: "downloading", Rollout: "r1"})
}

func TestConsoleInBrowser(t *testing.T) {
	fake := newFakeAPI(nil)
	hub := console.NewHub(console.HubOptions{Logger: slog.New(slog.DiscardHandler), Matcher: topicMatch, Authorize: fake.authorized})
	fake.hub = hub
	srv := httptest.NewServer(fake.handler())
	t.Cleanup(func() {
		hub.Close()
		srv.Close()
	})

	b := consoletest.New(t, consoletest.Options{})
	id := consoletest.TestID

	// First visit: the API answers 401, the console asks for the token once.
	b.Open(srv.URL)
	b.WaitVisible(id("token-input"))
	b.Type(id("token-input"), testToken)
	b.Click(id("token-save"))
	b.WaitText(id("gateway-id"), "pi-kitchen")
	b.WaitVisible(`[data-testid="live-state"][data-state="open"]`)
	poll.Eventually(t, "browser on the live stream", func() bool { return hub.Stats().Clients == 1 })

	// A live event reaches the table.
	start := time.Now()
	hub.Publish(console.Event{ID: "01JFIRST", Source: "mqtt", Topic: "sensors/kitchen/temp", Payload: []byte(`{"temp":22.5}`), QoS: 1})
	b.WaitVisible(`[data-testid="live-row"][data-type="event"]`)
	t.Logf("published event visible in the browser after %v", time.Since(start))
	if row := b.Text(`[data-testid="live-row"][data-type="event"]`); !strings.Contains(row, "sensors/kitchen/temp") || !strings.Contains(row, `{"temp":22.5}`) {
		t.Errorf("event row reads %q", row)
	}

	// Time to first live event for a returning user (token stored): from navigation
	// to the first row, with the gateway publishing every 10 ms.
	ctx, stop := context.WithCancel(context.Background())
	var pub sync.WaitGroup
	pub.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				hub.Publish(console.Event{Source: "mqtt", Topic: "sensors/hall/temp", Payload: []byte(`21.0`)})
			}
		}
	})
	b.Open("about:blank")
	start = time.Now()
	b.Open(srv.URL + "/#/live")
	b.WaitVisible(`[data-testid="live-row"][data-type="event"]`)
	t.Logf("time to first live event (navigation to row visible): %v", time.Since(start))
	stop()
	pub.Wait()

	// Pause holds new rows back; resume shows them. The barrier makes sure nothing
	// from the publisher above is still on its way.
	hub.Publish(console.Event{Source: "mqtt", Topic: "barrier"})
	b.WaitText(id("live-table"), "barrier")
	b.Click(id("live-clear"))
	b.Click(id("live-pause"))
	hub.Publish(console.Event{ID: "01JPAUSED", Source: "mqtt", Topic: "alarms/door", Payload: []byte(`"open"`)})
	b.WaitText(id("live-held"), "1 new")
	if n := b.Count(`[data-testid="live-row"]`); n != 0 {
		t.Errorf("%d rows shown while paused", n)
	}
	b.Click(id("live-pause"))
	b.WaitText(id("live-table"), "alarms/door")

	feed(hub)
	b.Type(id("live-filter"), "room1")
	b.WaitText(id("live-table"), "sensors/room1/temp")
	if text := b.Text(id("live-table")); strings.Contains(text, "room2") {
		t.Errorf("filter 'room1' still shows room2 rows")
	}
	b.SetValue(id("live-filter"), "")
	b.Screenshot("desktop-live")

	// Function cards: counters from the API, rate and latency from the live stream.
	b.Click(id("tab-functions"))
	b.WaitVisible(`[data-testid="fn-card"][data-name="temp-alert"] svg.spark`)
	if text := b.Text(`[data-testid="fn-card"][data-name="temp-alert"]`); !strings.Contains(text, "1,843 invocations") || !strings.Contains(strings.ToLower(text), "p95 latency") {
		t.Errorf("temp-alert card reads %q", text)
	}
	b.Screenshot("desktop-functions")

	// Edit and deploy: the PUT carries the editor's source and the settings.
	b.Click(`[data-testid="fn-card"][data-name="temp-alert"]`)
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="temp-alert"]`)
	b.WaitText(id("kv-table"), "count")
	program := "function handle(event)\n  local t = event.payload.temp\n  if t > tonumber(env.THRESHOLD) then\n    mqtt.publish(\"alerts/hot\", {temp = t})\n  end\n  return {temp = t, alert = t > 30}\nend\n"
	b.SetValue(id("editor-input"), program)
	b.Type(id("editor-input"), "-- checked")
	if n := b.Count(`#editor-hl .kw`); n < 5 {
		t.Errorf("only %d keywords highlighted", n)
	}
	b.Click(id("deploy"))
	b.WaitText(id("deploy-status"), "Deployed v3")
	fake.mu.Lock()
	got := fake.deploys[len(fake.deploys)-1]
	fake.mu.Unlock()
	want := map[string]any{
		"source": program + "-- checked", "triggers": []any{"mqtt:sensors/+/temp", "sensor:kitchen"},
		"timeout": "100ms", "memory": "16MiB", "concurrency": float64(2), "env": map[string]any{"THRESHOLD": "30"}, "emit": "alerts",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PUT body\n got %v\nwant %v", got, want)
	}

	// A compile error shows at its line, in the editor.
	broken := "function handle(event)\n  local t = event.payload.temp\n  if t === 30 then\n    return 1\n  end\nend\n"
	b.SetValue(id("editor-input"), broken)
	b.Click(id("deploy"))
	b.WaitVisible(id("editor-error"))
	if line := b.Attr(id("editor-error"), "data-line"); line != "3" {
		t.Errorf("error marker at line %q, want 3", line)
	}
	if text := b.Text(id("editor-error")); !strings.Contains(text, "Line 3") || !strings.Contains(text, "unexpected symbol") {
		t.Errorf("error marker reads %q", text)
	}
	if cls := b.Eval(`document.querySelector("#editor-gutter").children[2].className`); cls != "err" {
		t.Errorf("gutter line 3 class %q", cls)
	}
	b.WaitText(id("deploy-status"), "line 3")
	b.Screenshot("desktop-compile-error")

	// Fix, redeploy, invoke with a test event.
	b.SetValue(id("editor-input"), program)
	b.Click(id("deploy"))
	b.WaitText(id("deploy-status"), "Deployed v4")
	b.WaitGone(id("editor-error"))
	b.SetValue(id("invoke-event"), `{"topic": "sensors/kitchen/temp", "payload": {"temp": 31.5}}`)
	b.Click(id("invoke"))
	b.WaitText(id("invoke-value"), `"alert": true`)
	if text := b.Text(id("invoke-result")); !strings.Contains(text, "742 µs") || !strings.Contains(text, "temp") {
		t.Errorf("invoke result reads %q", text)
	}
	// The test invoke is a dry run unless switched off: the effects are listed, not applied.
	if text := b.Text(id("invoke-would")); !strings.Contains(text, "nothing was applied") || !strings.Contains(text, "set count = 1844") ||
		!strings.Contains(text, "del old") || !strings.Contains(text, "alerts ← {\"temp\":31.5}") ||
		!strings.Contains(text, "alerts/hot") || !strings.Contains(text, "GPIO27 → 1") {
		t.Errorf("dry run effects read %q", text)
	}
	fake.mu.Lock()
	inv := fake.invokes[len(fake.invokes)-1]
	fake.mu.Unlock()
	if !reflect.DeepEqual(inv, map[string]any{"topic": "sensors/kitchen/temp", "payload": map[string]any{"temp": 31.5}}) {
		t.Errorf("invoke body %v", inv)
	}
	b.WaitText(id("fn-logs"), "v4")
	b.Screenshot("desktop-invoke")

	// Roll back to v1: two clicks, no blocking dialog.
	b.Click(id("rollback-1"))
	b.Click(id("rollback-1"))
	b.WaitText(id("deploy-status"), "Rolled back")
	fake.mu.Lock()
	rb := fake.rollbacks
	fake.mu.Unlock()
	if len(rb) != 1 || rb[0]["version"] != float64(1) {
		t.Errorf("rollback requests %v", rb)
	}

	// A new function: named in the page, created by its first deploy.
	b.Click(id("tab-functions"))
	b.Click(id("fn-new"))
	b.WaitVisible(`[data-testid="view-fn"][data-loaded=""]`)
	b.Type(id("fn-name"), "hello")
	b.SetValue(id("fn-triggers"), "every:30s")
	b.Click(id("deploy"))
	b.WaitText(id("deploy-status"), "Deployed v1")
	b.WaitText(id("fn-title"), "hello")
	if u := b.Eval(`location.hash`); u != "#/fn/hello" {
		t.Errorf("after creating, the page is at %q", u)
	}
	fake.mu.Lock()
	created := fake.deploys[len(fake.deploys)-1]
	fake.mu.Unlock()
	if src, _ := created["source"].(string); !strings.Contains(src, "function handle(event)") ||
		!reflect.DeepEqual(created["triggers"], []any{"every:30s"}) {
		t.Errorf("new function deployed with %v", created)
	}

	// Enter keeps the indentation and indents after an opener; Tab inserts two spaces.
	b.SetValue(id("editor-input"), "function handle(e)")
	b.Type(id("editor-input"), "\nif e then\nx\t")
	if got := b.Eval(`document.querySelector("#editor-input").value`); got != "function handle(e)\n  if e then\n    x  " {
		t.Errorf("typed into the editor: %q", got)
	}

	// Long brackets and comments, the tricky parts of Lua highlighting.
	b.SetValue(id("editor-input"), "--[==[ a\n]] still comment ]==]\nlocal s = [[x\n-- not a comment]] .. 'q\\'s'\nlocal n = 0x1F + 1e-3 -- done")
	if got := b.Eval(`[...document.querySelectorAll("#editor-hl span")].map(s => s.className + ":" + s.textContent).join("|")`); got !=
		`com:--[==[ a|com:]] still comment ]==]|kw:local|op:=|str:[[x|str:-- not a comment]]|str:'q\'s'|kw:local|op:=|num:0x1F|op:+|num:1e-3|com:-- done` {
		t.Errorf("highlighting: %s", got)
	}

	b.Click(id("tab-sync"))
	b.WaitText(`[data-testid="sink-card"][data-name="iot-core"]`, "no such host")
	if state := b.Eval(`document.querySelector('[data-name="iot-core"] [data-testid="sink-state"]').textContent`); state != "backoff" {
		t.Errorf("iot-core state %q", state)
	}
	b.Screenshot("desktop-sync")
	b.Click(id("tab-sensors"))
	b.WaitVisible(`[data-testid="sensor-card"][data-name="kitchen"] svg.spark`)
	b.Screenshot("desktop-sensors")
	b.ColorScheme("dark")
	b.Click(id("tab-live"))
	b.Screenshot("desktop-live-dark")
	b.Open(srv.URL + "/#/fn/temp-alert")
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="temp-alert"]`)
	b.Screenshot("desktop-editor-dark")
	b.ColorScheme("light")

	// The same on a phone.
	b.Viewport(390, 844, true)
	b.Open(srv.URL + "/#/live")
	b.WaitVisible(`[data-testid="live-state"][data-state="open"]`)
	poll.Eventually(t, "phone on the live stream", func() bool { return hub.Stats().Clients == 1 })
	feed(hub)
	b.WaitVisible(`[data-testid="live-row"][data-type="sensor"]`)
	b.Screenshot("phone-live")
	b.Click(id("tab-functions"))
	b.WaitVisible(`[data-testid="fn-card"][data-name="temp-alert"] svg.spark`)
	b.Screenshot("phone-functions")
	b.Click(`[data-testid="fn-card"][data-name="temp-alert"]`)
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="temp-alert"]`)
	b.SetValue(id("editor-input"), broken)
	b.Click(id("deploy"))
	b.WaitVisible(id("editor-error"))
	b.Screenshot("phone-compile-error")
	b.Click(id("tab-sensors"))
	b.WaitVisible(`[data-testid="sensor-card"][data-name="kitchen"]`)
	b.Screenshot("phone-sensors")
	if w := b.Eval(`String(document.documentElement.scrollWidth)`); w != "390" {
		t.Errorf("phone page is %s px wide: it scrolls sideways", w)
	}

	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("errors in the page: %q", errs)
	}
}

// TestConsoleShowsSkippedMarker: when the browser cannot keep up, the gap is shown in
// the table, with the number of messages the hub dropped for it.
func TestConsoleShowsSkippedMarker(t *testing.T) {
	fake := newFakeAPI(nil)
	fake.open = true
	hub := console.NewHub(console.HubOptions{Logger: slog.New(slog.DiscardHandler), ClientBuffer: 1, MaxRate: -1})
	fake.hub = hub
	srv := httptest.NewServer(fake.handler())
	t.Cleanup(func() {
		hub.Close()
		srv.Close()
	})
	b := consoletest.New(t, consoletest.Options{})
	b.Open(srv.URL)
	b.WaitVisible(`[data-testid="live-state"][data-state="open"]`)
	poll.Eventually(t, "browser on the live stream", func() bool { return hub.Stats().Clients == 1 })

	// With a one-message buffer, a burst outruns the socket at once.
	payload := []byte(`"` + strings.Repeat("z", 8000) + `"`)
	for i := 0; hub.Stats().Skipped == 0; i++ {
		if i == 20 {
			t.Fatal("nothing skipped after 20 bursts")
		}
		for range 100 {
			hub.Publish(console.Event{Source: "mqtt", Topic: "burst", Payload: payload})
		}
	}
	// Every dropped message is reported: the markers add up to the hub's count once
	// the browser has caught up (even the last messages may have been dropped).
	var sum string
	poll.Eventually(t, "markers to add up", func() bool {
		sum = b.Eval(`String([...document.querySelectorAll('[data-testid="live-skipped"]')].reduce((n, e) => n + Number(e.dataset.count), 0))`)
		return sum == fmt.Sprint(hub.Stats().Skipped)
	})
	if text := b.Text(consoletest.TestID("live-skipped")); !strings.Contains(text, "skipped") {
		t.Errorf("marker reads %q", text)
	}
	b.Screenshot("skipped-marker")
}
