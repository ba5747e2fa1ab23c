package gateway

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/gateway/console/consoletest"
	"github.com/moongate/moongate/internal/poll"
)

// The console in a real headless Chromium against a real gateway (embedded broker, Badger
// in a temp dir): the browser asks for the token, sees a device's readings arrive live,
// edits and deploys a function, invokes it, sees a broken version refused at its line while
// the deployed one keeps running, rolls back, and reads the function's KV. Screenshots of
// each step (desktop and phone) go to the artifacts directory.
//
// Chromium: /usr/bin/chromium or $CHROMIUM (apt-get install chromium); without it the
// test is skipped.
func TestConsoleInBrowserAgainstGateway(t *testing.T) {
	dir := t.TempDir()
	const token = "br0wser-Test_token"
	writeFile(t, dir, "thermo.lua", thermoSource("v1"))
	cfg := strings.Replace(baseConfig(dir, `functions:
  - {name: thermo, source: thermo.lua, triggers: ["mqtt:sensors/+/temp@1"]}
`), "console: {listen: 127.0.0.1:0}", "console: {listen: 127.0.0.1:0, token: "+token+"}", 1)
	tg := startYAML(t, dir, cfg)
	api := func(method, path string, body any) apiResult {
		t.Helper()
		return call(t, method, tg.api+"/api/v1/"+path, token, body)
	}

	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	id := consoletest.TestID

	// First visit: the gateway answers 401, the console asks for the token once, then the
	// websocket authenticates with it.
	b.Open(tg.api)
	b.WaitVisible(id("token-input"))
	b.Type(id("token-input"), token)
	b.Click(id("token-save"))
	b.WaitText(id("gateway-id"), "test-gw")
	b.WaitVisible(`[data-testid="live-state"][data-state="open"]`)
	poll.Eventually(t, "the browser on the live stream", func() bool { return tg.g.hub.Stats().Clients == 1 })

	// A device publishes; its reading and the invocation it starts appear live.
	dev := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID("thermo-1"))
	if tok := dev.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("device connect: %v", tok.Error())
	}
	defer dev.Disconnect(100)
	publish := func(topic, payload string) {
		t.Helper()
		if tok := dev.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	start := time.Now()
	publish("sensors/kitchen/temp", `{"temp": 22.5}`)
	b.WaitVisible(`[data-testid="live-row"][data-type="event"]`)
	t.Logf("device publish to event row visible: %v", time.Since(start))
	if row := b.Text(`[data-testid="live-row"][data-type="event"]`); !strings.Contains(row, "sensors/kitchen/temp") || !strings.Contains(row, `{"temp":22.5}`) {
		t.Errorf("event row reads %q", row)
	}
	b.WaitText(`[data-testid="live-row"][data-type="invocation"]`, `"v":"v1"`)

	// Time to first live event for a returning user (token stored): from navigation to
	// the first event row, with a device publishing every 20 ms.
	ctx, stopDevice := context.WithCancel(context.Background())
	var device sync.WaitGroup
	device.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				dev.Publish("sensors/hall/temp", 0, false, fmt.Sprintf(`{"temp": %.1f}`, 20+float64(i%10)/10))
			}
		}
	})
	b.Open("about:blank")
	start = time.Now()
	b.Open(tg.api + "/#/live")
	b.WaitVisible(`[data-testid="live-row"][data-type="event"]`)
	t.Logf("time to first live event (navigation to row visible, real gateway): %v", time.Since(start))
	b.WaitText(id("live-table"), "sensors/hall/temp")
	stopDevice()
	device.Wait()
	b.Screenshot("desktop-live")

	// The function's card and page: counters from the API, KV from the store.
	b.Click(id("tab-functions"))
	b.WaitVisible(`[data-testid="fn-card"][data-name="thermo"]`)
	b.Screenshot("desktop-functions")
	b.Click(`[data-testid="fn-card"][data-name="thermo"]`)
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="thermo"]`)
	if got := b.Eval(`document.querySelector("#editor-input").value`); got != thermoSource("v1") {
		t.Errorf("the editor holds %q, want the deployed source", got)
	}
	b.WaitText(id("kv-table"), "count")

	// Edit and deploy v2 from the editor.
	b.SetValue(id("editor-input"), thermoSource("v2"))
	b.Click(id("deploy"))
	b.WaitText(id("deploy-status"), "Deployed v2")
	r := api("GET", "functions/thermo", nil)
	if r.body["version"] != float64(2) || r.body["source"] != thermoSource("v2") {
		t.Fatalf("after deploying from the browser: %s", r.raw)
	}
	if tr, _ := r.body["triggers"].([]any); len(tr) != 1 || tr[0] != "mqtt:sensors/+/temp@1" {
		t.Errorf("the deploy kept the triggers: %v", r.body["triggers"])
	}

	// Invoke with a test event: the result and logs of v2.
	b.SetValue(id("invoke-event"), `{"topic": "sensors/kitchen/temp", "payload": {"temp": 31.5}}`)
	b.Click(id("invoke"))
	b.WaitText(id("invoke-value"), `"v": "v2"`)
	if text := b.Text(id("invoke-result")); !strings.Contains(text, `"temp": 31.5`) || !strings.Contains(text, "reading 31.5") {
		t.Errorf("invoke result reads %q", text)
	}
	b.WaitText(id("fn-logs"), "v2")
	b.Screenshot("desktop-invoke")

	// A broken version: refused at its line, shown in the editor; v2 keeps running.
	broken := "function handle(event)\n  local t = event.payload.temp\n  if t === 30 then\n    return 1\n  end\nend\n"
	b.SetValue(id("editor-input"), broken)
	b.Click(id("deploy"))
	b.WaitVisible(id("editor-error"))
	if line := b.Attr(id("editor-error"), "data-line"); line != "3" {
		t.Errorf("compile error marked at line %q, want 3 (%s)", line, b.Text(id("editor-error")))
	}
	b.WaitText(id("deploy-status"), "line 3")
	b.Screenshot("desktop-compile-error")
	if r := api("GET", "functions/thermo", nil); r.body["version"] != float64(2) {
		t.Errorf("a refused deploy changed the version: %s", r.raw)
	}
	publish("sensors/kitchen/temp", `{"temp": 23.5}`)
	b.WaitText(id("fn-logs"), "✓ v2")
	var last map[string]any
	if !kvJSON(t, tg, "thermo", "last", &last) || last["v"] != "v2" || last["temp"] != 23.5 {
		t.Errorf("after the refused deploy the device's reading ran on v2: kv last = %v", last)
	}

	// Roll back to v1 from the version list (two clicks, no blocking dialog).
	b.Click(id("rollback-1"))
	b.Click(id("rollback-1"))
	b.WaitText(id("deploy-status"), "Rolled back")
	r = api("GET", "functions/thermo", nil)
	if r.body["version"] != float64(3) || r.body["source"] != thermoSource("v1") {
		t.Fatalf("after rolling back: %s", r.raw)
	}
	if v := r.body["versions"].([]any)[0].(map[string]any); v["rollback_of"] != float64(1) {
		t.Errorf("v3 is not marked a rollback of v1: %v", v)
	}
	if got := b.Eval(`document.querySelector("#editor-input").value`); got != thermoSource("v1") {
		t.Errorf("after the rollback the editor holds %q", got)
	}
	// A test invoke is a dry run by default: it shows the KV write it would make and makes
	// none; switched off, it writes.
	b.Click(id("invoke"))
	b.WaitVisible(id("invoke-dry-run"))
	b.WaitText(id("invoke-value"), `"v": "v1"`)
	b.WaitText(id("invoke-would"), "set last = ")
	if !kvJSON(t, tg, "thermo", "last", &last) || last["v"] != "v2" {
		t.Errorf("a dry run wrote the KV: last = %v", last)
	}
	b.Click(id("invoke-dry"))
	b.Click(id("invoke"))
	poll.Eventually(t, "the real invoke to write the KV", func() bool {
		return kvJSON(t, tg, "thermo", "last", &last) && last["v"] == "v1"
	})

	// The KV panel shows what the store holds.
	var count float64
	kvJSON(t, tg, "thermo", "count", &count)
	b.Click(id("kv-refresh"))
	b.WaitText(id("kv-table"), fmt.Sprintf("count\t%v", count))
	b.SetValue(id("kv-prefix"), "la")
	b.Click(id("kv-refresh"))
	poll.Eventually(t, "the KV panel to show only the keys starting with 'la'", func() bool {
		return b.Count(`[data-testid="kv-row"]`) == 1
	})
	if text := b.Text(id("kv-table")); !strings.HasPrefix(text, "last") || !strings.Contains(text, `"v":"v1"`) {
		t.Errorf("kv prefix 'la' shows %q", text)
	}
	b.Screenshot("desktop-rollback-kv")

	// The same on a phone: live table, the function page with a compile error, no
	// sideways scrolling.
	b.Viewport(390, 844, true)
	b.Open(tg.api + "/#/live")
	b.WaitVisible(`[data-testid="live-state"][data-state="open"]`)
	poll.Eventually(t, "the phone on the live stream", func() bool { return tg.g.hub.Stats().Clients == 1 })
	publish("sensors/garden/temp", `{"temp": 18.25}`)
	b.WaitText(id("live-table"), "sensors/garden/temp")
	b.Screenshot("phone-live")
	b.Open(tg.api + "/#/fn/thermo")
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="thermo"]`)
	b.SetValue(id("editor-input"), broken)
	b.Click(id("deploy"))
	b.WaitVisible(id("editor-error"))
	b.Screenshot("phone-compile-error")
	if w := b.Eval(`String(document.documentElement.scrollWidth)`); w != "390" {
		t.Errorf("the phone page is %s px wide: it scrolls sideways", w)
	}
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("errors in the page: %q", errs)
	}
	t.Logf("screenshots in %s", b.Artifacts())
}

// thermoSource is the browser test's function; tag tells the versions apart.
func thermoSource(tag string) string {
	return fmt.Sprintf(`-- thermo %s: counts readings and keeps the last one.
function handle(event)
  local n = kv.incr("count")
  local t = type(event.payload) == "table" and event.payload.temp or nil
  log.info("reading " .. tostring(t))
  kv.set("last", {temp = t, v = %q})
  return {n = n, temp = t, v = %q}
end
`, tag, tag, tag)
}

func writeFile(t testing.TB, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The simulated button of the button-relay example, pressed in the console: each press
// goes through the gateway's edge detection to the toggle function, whose invocation
// shows on the button's card, and the relay card shows the output pin's new level.
func TestConsolePressesSimulatedButton(t *testing.T) {
	cfg := loadChecked(t, filepath.Join("..", "examples", "button-relay", "moongate.sim.yaml"))
	onLoopback(t, cfg)
	tg := startConfig(t, cfg)
	if r := call(t, "GET", tg.api+"/api/v1/status", "", nil); !strings.Contains(r.raw, `"sim":true`) {
		// The console offers Press only where the status API says a pin is simulated.
		t.Skipf("GET /api/v1/status does not report pin, mode and sim of gpio sensors yet (API_SHAPES.md): %s", r.raw)
	}

	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	button := `[data-testid="sensor-card"][data-name="button"]`
	relay := `[data-testid="sensor-card"][data-name="relay"]`
	b.Open(tg.api + "/#/sensors")
	b.WaitVisible(`[data-testid="live-state"][data-state="open"]`)
	b.WaitVisible(button + ` [data-testid="gpio-press"]`)
	b.WaitVisible(relay + ` [data-testid="gpio-level"]`)
	if n := b.Count(relay + ` [data-testid="gpio-press"]`); n != 0 {
		t.Errorf("the relay output has %d press buttons", n)
	}
	poll.Eventually(t, "the browser on the live stream", func() bool { return tg.g.hub.Stats().Clients == 1 })

	for n := 1; n <= 2; n++ {
		start := time.Now()
		b.Click(button + ` [data-testid="gpio-press"]`)
		want := map[int]string{1: `"on":true`, 2: `"on":false`}[n]
		b.WaitText(button+` [data-testid="gpio-invocation"]`, want)
		b.WaitText(button+` [data-testid="gpio-invocation"]`, fmt.Sprintf(`"presses":%d`, n))
		level := map[int]string{1: "1", 2: "0"}[n]
		b.WaitVisible(fmt.Sprintf(`%s [data-testid="gpio-level"][data-level="%s"]`, relay, level))
		t.Logf("press %d: click to relay level %s shown in %v", n, level, time.Since(start))
		if lvl, err := tg.g.pins.ReadPin("relay"); err != nil || fmt.Sprint(lvl) != level {
			t.Errorf("press %d: relay pin at %d (%v), want %s", n, lvl, err, level)
		}
		if n == 1 {
			b.WaitText(button+` [data-testid="gpio-activity"]`, "falling edge")
			b.Screenshot("desktop-button-pressed")
		}
		time.Sleep(120 * time.Millisecond) // past the 50 ms debounce of the release
	}
	b.Click(consoletest.TestID("tab-live"))
	b.WaitText(consoletest.TestID("live-table"), "gpio/GPIO17")
	b.WaitText(consoletest.TestID("live-table"), "falling · level 0")

	b.Viewport(390, 844, true)
	b.Open(tg.api + "/#/sensors")
	b.WaitVisible(button + ` [data-testid="gpio-press"]`)
	b.Screenshot("phone-sensors")
	if w := b.Eval(`String(document.documentElement.scrollWidth)`); w != "390" {
		t.Errorf("the phone page is %s px wide: it scrolls sideways", w)
	}
	if r := call(t, "GET", tg.api+"/api/v1/functions/toggle/kv", "", nil); r.status != http.StatusOK || !strings.Contains(r.raw, `"presses","value":2`) {
		t.Errorf("kv after two presses: %s", r.raw)
	}
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("errors in the page: %q", errs)
	}
}
