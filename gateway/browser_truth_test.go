package gateway

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moongate/moongate/gateway/console/consoletest"
	"github.com/moongate/moongate/internal/poll"
)

// The console in a real browser against a real gateway does not mislead: cards show the
// API's counters (10 invocations and 10 errors are 100% errors; a function that never ran
// says so); log lines are live messages that reach the Live table and the function's
// Recent logs with their file:line; an empty filtered table says how much it hides; what
// the user typed on one function's page stays there; the KV panel's empty message is
// right; errors give their place once; the test invoke is a dry run unless switched off;
// and Delete asks first, with the choice to purge.
func TestConsoleTellsTheTruth(t *testing.T) {
	dir := t.TempDir()
	tg := startYAML(t, dir, baseConfig(dir, ""))
	api := func(method, path string, body any) apiResult {
		t.Helper()
		return call(t, method, tg.api+"/api/v1/"+path, "", body)
	}
	for name, source := range map[string]string{
		"chatty": "function handle(event)\n  log.info(string.format(\"alert: %s at %g\", \"dev-1\", 31.5))\n  kv.set(\"count\", 1)\n  return {ok = true}\nend\n",
		"flaky":  "function handle(event)\n  error(\"no sensor\")\nend\n",
		"idle":   "function handle(event)\n  return 1\nend\n",
	} {
		if r := api("PUT", "functions/"+name, map[string]any{"source": source, "triggers": []string{}}); r.status != http.StatusCreated {
			t.Fatalf("deploy %s: %d %s", name, r.status, r.raw)
		}
	}
	for range 10 {
		api("POST", "functions/flaky/invoke", map[string]any{})
	}
	api("POST", "functions/chatty/invoke", map[string]any{}) // a real run: chatty has a key

	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	id := consoletest.TestID
	card := func(name string) string { return fmt.Sprintf(`[data-testid="fn-card"][data-name=%q]`, name) }

	// Cards: the counters, not figures made of an empty stream.
	b.Open(tg.api + "/#/functions")
	b.WaitVisible(card("flaky") + " " + id("fn-errors"))
	if got := b.Text(card("flaky") + " " + id("fn-errors")); got != "100%" {
		t.Errorf("10 invocations, 10 errors: the card shows %q errors", got)
	}
	if got := b.Text(card("flaky") + " " + id("fn-counts")); got != "10 invocations · 10 errors" {
		t.Errorf("flaky's counts read %q", got)
	}
	if got := b.Text(card("chatty") + " " + id("fn-counts")); got != "1 invocation · 0 errors" {
		t.Errorf("chatty's counts read %q", got)
	}
	b.WaitText(card("idle")+" "+id("fn-none"), "no invocations yet")
	if n := b.Count(card("idle") + ` [data-testid="fn-rate"], ` + card("idle") + ` [data-testid="fn-p95"]`); n != 0 {
		t.Errorf("a function that never ran shows %d rate or latency figures", n)
	}
	b.Screenshot("truth-cards")

	// The Live table filtered to log: it says what it hides, then shows the log lines.
	b.Click(id("tab-live"))
	b.WaitVisible(`[data-testid="live-state"][data-state="open"]`)
	poll.Eventually(t, "the browser on the live stream", func() bool { return tg.g.hub.Stats().Clients == 1 })
	for _, typ := range []string{"event", "invocation", "sync", "sensor", "firmware"} {
		b.Click(id("live-type-" + typ))
	}
	api("POST", "functions/flaky/invoke", map[string]any{})
	api("POST", "functions/flaky/invoke", map[string]any{})
	b.WaitText("#live-empty", "2 messages hidden")
	b.Screenshot("truth-live-filter-hides")
	api("POST", "functions/chatty/invoke", map[string]any{})
	b.WaitVisible(`[data-testid="live-row"][data-type="log"]`)
	if row := b.Text(`[data-testid="live-row"][data-type="log"]`); !strings.Contains(row, "chatty.lua:2") || !strings.Contains(row, "alert: dev-1 at 31.5") {
		t.Errorf("log row reads %q", row)
	}
	for _, typ := range []string{"event", "invocation", "sync", "sensor", "firmware"} {
		b.Click(id("live-type-" + typ))
	}

	// The function page: the invoke is a dry run by default; Recent logs get the lines.
	b.Open(tg.api + "/#/fn/chatty")
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="chatty"]`)
	if got := b.Eval(`String(document.querySelector('[data-testid="invoke-dry"]').checked)`); got != "true" {
		t.Errorf("the dry-run switch is %s by default", got)
	}
	b.Click(id("invoke"))
	b.WaitVisible(id("invoke-result"))
	b.WaitText(id("fn-logs"), "chatty.lua:2")
	b.WaitText(id("fn-logs"), "alert: dev-1 at 31.5")
	b.FullScreenshot("truth-fn-logs-full")
	sent := func(path string) bool {
		return b.Eval(`String(performance.getEntriesByType("resource").some(e => e.name.endsWith(`+strconv.Quote(path)+`)))`) == "true"
	}
	poll.Eventually(t, "the test invoke to ask for a dry run", func() bool { return sent("/api/v1/functions/chatty/invoke?dry_run=1") })
	b.Screenshot("truth-fn-logs")

	// Page state is per function; the KV panel says whether other keys exist.
	b.SetValue(id("invoke-event"), `{"payload": "mine"}`)
	b.SetValue(id("kv-prefix"), "nope/")
	b.Click(id("kv-refresh"))
	b.WaitText(id("kv-table"), "No keys start with “nope/”; the function has other keys")
	b.Open(tg.api + "/#/fn/idle")
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="idle"]`)
	if ev := b.Eval(`document.querySelector('[data-testid="invoke-event"]').value`); strings.Contains(ev, "mine") || !strings.Contains(ev, "31.5") {
		t.Errorf("idle's test event is %q: chatty's leaked", ev)
	}
	if p := b.Eval(`document.querySelector('[data-testid="kv-prefix"]').value`); p != "" {
		t.Errorf("idle's KV prefix is %q: chatty's leaked", p)
	}
	b.WaitText(id("kv-table"), "This function has no keys stored yet.")
	b.Open(tg.api + "/#/fn/chatty")
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="chatty"]`)
	if ev := b.Eval(`document.querySelector('[data-testid="invoke-event"]').value`); ev != `{"payload": "mine"}` {
		t.Errorf("back on chatty the test event is %q", ev)
	}
	if p := b.Eval(`document.querySelector('[data-testid="kv-prefix"]').value`); p != "nope/" {
		t.Errorf("back on chatty the KV prefix is %q", p)
	}

	// Errors give their place once.
	b.Open(tg.api + "/#/fn/flaky")
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="flaky"]`)
	b.Click(id("invoke"))
	b.WaitText(id("invoke-error"), "no sensor")
	if got := b.Text(id("invoke-error")); got != "flaky v1: flaky.lua:2: no sensor" {
		t.Errorf("invoke error reads %q", got)
	}
	b.WaitText(id("editor-error"), "Line 2")
	if got := b.Text(id("editor-error")); got != "Line 2: no sensor" {
		t.Errorf("the editor marks the runtime error as %q", got)
	}
	b.SetValue(id("editor-input"), "function handle(e)\n  return e.x +\nend\n")
	b.Click(id("deploy"))
	b.WaitText(id("editor-error"), "Line 3")
	if got := b.Text(id("editor-error")); got != "Line 3: syntax error near 'end'" {
		t.Errorf("the editor marks the compile error as %q", got)
	}
	b.Screenshot("truth-errors")

	// Delete asks first; cancel keeps the function, confirm with purge deletes it.
	b.Open(tg.api + "/#/fn/idle")
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="idle"]`)
	b.Click(id("fn-delete"))
	b.WaitVisible(id("delete-dialog"))
	b.Screenshot("truth-delete-dialog")
	b.Click(id("delete-cancel"))
	b.WaitGone(id("delete-dialog"))
	if r := api("GET", "functions/idle", nil); r.status != http.StatusOK {
		t.Fatalf("cancelled delete: GET idle answers %d", r.status)
	}
	b.Click(id("fn-delete"))
	b.WaitVisible(id("delete-dialog"))
	b.Click(id("delete-purge"))
	b.Click(id("delete-confirm"))
	poll.Eventually(t, "idle to be deleted", func() bool { return api("GET", "functions/idle", nil).status == http.StatusNotFound })
	// The browser records the request once its answer is in, which may be after the
	// gateway deleted the function.
	poll.Eventually(t, "the delete to ask to purge", func() bool { return sent("/api/v1/functions/idle?purge=1") })
	b.WaitVisible(card("flaky"))
	// The list may first show the cards it had, then its fresh fetch.
	poll.Eventually(t, "the deleted function's card to go", func() bool { return b.Count(card("idle")) == 0 })
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("errors in the page: %q", errs)
	}
}

// jsFixed formats v as the console's sensor cards do (fmt in sensors.js).
func jsFixed(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// A console opens with a picture: the sensor plot starts with the readings the gateway
// kept from before the page opened, and the sink transitions list with the transitions.
// When the gateway goes away, the header says disconnected and the figures are marked
// stale until it is back.
func TestConsoleOpensWithHistoryAndMarksStale(t *testing.T) {
	dir := t.TempDir()
	cfg := baseConfig(dir, `sensors:
  sim-1: {driver: sim, every: 100ms, values: {temp: "floor(t*10)"}}
functions:
  - {name: forward, source: forward.lua, triggers: ["sensor:sim-1"]}
sync:
  sinks:
    - name: cloud
      http: {url: "http://127.0.0.1:1/ingest", timeout: 1s}
`)
	writeFile(t, dir, "forward.lua", "function handle(event)\n  cloud.emit(\"readings\", event.values)\nend\n")
	tg := startYAML(t, dir, cfg)

	var hist apiResult
	poll.Eventually(t, "readings and a sink transition in the history", func() bool {
		hist = call(t, "GET", tg.api+"/api/v1/history", "", nil)
		readings, _ := hist.body["sensor"].([]any)
		transitions, _ := hist.body["sync"].([]any)
		return len(readings) >= 5 && len(transitions) >= 1
	})
	first := hist.body["sensor"].([]any)[0].(map[string]any)["values"].(map[string]any)["temp"].(float64)
	transition := hist.body["sync"].([]any)[0].(map[string]any)

	b := consoletest.New(t, consoletest.Options{Timeout: 20 * time.Second})
	id := consoletest.TestID
	b.Open(tg.api + "/#/sensors")
	sensor := `[data-testid="sensor-card"][data-name="sim-1"]`
	b.WaitText(sensor, "min "+jsFixed(first))
	b.Screenshot("history-sensors")
	b.Click(id("tab-sync"))
	b.WaitVisible(fmt.Sprintf(`[data-testid="sync-transition"][data-ts="%.0f"]`, transition["ts"]))
	if text := b.Text(id("sync-log")); !strings.Contains(text, "cloud → "+transition["state"].(string)) {
		t.Errorf("transitions read %q", text)
	}
	b.Screenshot("history-sync")

	// The gateway goes away: everything the page shows is marked stale.
	b.WaitVisible(`[data-testid="live-state"][data-state="open"]`)
	addr := tg.g.HTTPAddr()
	tg.stop(t)
	b.WaitText(id("live-state"), "disconnected")
	b.WaitVisible(`#status[data-stale]`)
	b.WaitVisible(id("stale-banner"))
	if text := b.Text(id("stale-banner")); !strings.Contains(text, "Disconnected from the gateway") {
		t.Errorf("the banner reads %q", text)
	}
	if op := b.Eval(`getComputedStyle(document.querySelector("#st-uptime")).opacity`); op == "1" {
		t.Errorf("the uptime chip is not marked stale")
	}
	b.Screenshot("stale")

	// It comes back on the same address: the page reconnects and is current again.
	startYAML(t, dir, strings.Replace(cfg, "console: {listen: 127.0.0.1:0}", "console: {listen: "+addr+"}", 1))
	b.WaitVisible(`[data-testid="live-state"][data-state="open"]`)
	poll.Eventually(t, "the stale marks to go", func() bool {
		return b.Eval(`String(document.querySelector("#status").hasAttribute("data-stale") || !document.querySelector("#stale-banner").hidden)`) == "false"
	})
	if text := b.Text(id("live-state")); text != "live" {
		t.Errorf("after reconnecting the header says %q", text)
	}
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("errors in the page: %q", errs)
	}
}
