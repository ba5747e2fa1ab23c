package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moongate/moongate/gateway/console/consoletest"
	"github.com/moongate/moongate/mqtt"
)

// attackScript is what a hostile page runs against the gateway at base: every
// state-changing endpoint with the requests a page may send without a preflight
// (no-cors, text/plain) and, for DELETE, a CORS request; then the MQTT websocket. It
// resolves to a report of what the page could see.
func attackScript(base, mqttWS string) string {
	return fmt.Sprintf(`(async () => {
  const base = %q, out = [];
  const simple = (method, path, body) => fetch(base + path, {method, mode: 'no-cors',
      headers: {'Content-Type': 'text/plain'}, body}).then(() => out.push(method + ' ' + path + ' sent'), e => out.push(method + ' ' + path + ' ' + e));
  await simple('POST', '/api/v1/functions/hit/invoke', '{}');
  await simple('POST', '/api/v1/functions/hit/rollback', '{}');
  await simple('POST', '/api/v1/gpio/GPIO17', '{"level":0}');
  await fetch(base + '/api/v1/functions/evil', {method: 'PUT', headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({source: 'function handle() end', triggers: ['mqtt:x']})}).then(r => out.push('PUT ' + r.status), e => out.push('PUT refused'));
  await fetch(base + '/api/v1/functions/hit', {method: 'DELETE'}).then(r => out.push('DELETE ' + r.status), e => out.push('DELETE refused'));
  await fetch(base + '/api/v1/functions/hit', {method: 'DELETE', mode: 'no-cors'}).then(() => out.push('DELETE no-cors sent'), e => out.push('DELETE no-cors refused'));
  const ws = (url, proto) => new Promise(res => {
    const s = new WebSocket(url, proto);
    s.onopen = () => { s.close(); res('open'); };
    s.onerror = () => res('refused');
  });
  out.push('mqtt ws ' + await ws(%q, 'mqtt'));
  out.push('live ws ' + await ws(base.replace('http', 'ws') + '/api/v1/live', 'moongate.v1'));
  return out.join('\n');
})()`, base, mqttWS)
}

// No page but the console's own can drive the gateway through the user's browser: not a
// page of another origin, not a file:// page, not a DNS-rebinding page (a foreign Host).
func TestForeignPagesCannotDriveGateway(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "hit.lua", `function handle(e) kv.incr("hits") return 1 end`)
	writeFile(t, dir, "button.lua", `function handle(e) kv.incr("presses") end`)
	cfg := strings.Replace(baseConfig(dir, `sensors:
  button: {driver: gpio, pin: GPIO17, pull: up, sim: true}
functions:
  - {name: hit, source: hit.lua, triggers: ["mqtt:hit/#"]}
  - {name: button, source: button.lua, triggers: ["gpio:GPIO17:both"]}
`), "embedded: {listen: 127.0.0.1:0}", "embedded: {listen: 127.0.0.1:0, ws_listen: 127.0.0.1:0}", 1)
	tg := startYAML(t, dir, cfg)
	// hit at version 2, so that a rollback would show.
	if r := call(t, "PUT", tg.api+"/api/v1/functions/hit", "", map[string]any{"source": `function handle(e) kv.incr("hits") return 2 end`}); r.status != http.StatusOK {
		t.Fatalf("redeploy: %d %s", r.status, r.raw)
	}
	mqttWS := "ws://" + tg.g.bus.(*mqtt.Embedded).WSAddr()
	untouched := func(page string) {
		t.Helper()
		fns := functionVersions(t, tg)
		if fmt.Sprint(fns) != fmt.Sprint(map[string]int{"button": 1, "hit": 2}) {
			t.Errorf("%s: functions now %v", page, fns)
		}
		for _, fn := range []string{"hit", "button"} {
			if r := call(t, "GET", tg.api+"/api/v1/functions/"+fn+"/kv", "", nil); len(r.body["items"].([]any)) != 0 {
				t.Errorf("%s: %s ran: %s", page, fn, r.raw)
			}
		}
	}

	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<!doctype html><title>cute cats</title><p>cats</p>")
	}))
	defer evil.Close()
	b.Open(evil.URL)
	report := b.EvalAsync(attackScript(tg.api, mqttWS))
	t.Logf("a page of another origin:\n%s", report)
	if !strings.Contains(report, "mqtt ws refused") || !strings.Contains(report, "live ws refused") {
		t.Errorf("a page of another origin opened a websocket:\n%s", report)
	}
	untouched("another origin")

	page := filepath.Join(dir, "attack.html")
	if err := os.WriteFile(page, []byte("<!doctype html><title>saved page</title>"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Open("file://" + page)
	report = b.EvalAsync(attackScript(tg.api, mqttWS))
	t.Logf("a file:// page:\n%s", report)
	if !strings.Contains(report, "mqtt ws refused") {
		t.Errorf("a file:// page opened the MQTT websocket:\n%s", report)
	}
	untouched("file://")

	// DNS rebinding: the attacker's name resolves to 127.0.0.1, so the browser sends its
	// requests, same-origin for it, with Host: attacker.example.
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/v1/functions/hit", ""},
		{"GET", "/", ""},
		{"PUT", "/api/v1/functions/evil", `{"source":"function handle() end","triggers":["mqtt:x"]}`},
	} {
		req, _ := http.NewRequest(c.method, tg.api+c.path, strings.NewReader(c.body))
		req.Host = "attacker.example:8080"
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("%s %s with a foreign Host: %d", c.method, c.path, resp.StatusCode)
		}
	}
	untouched("DNS rebinding")

	// The console's own page still works: same origin, JSON.
	b.Open(tg.api)
	if got := b.EvalAsync(`fetch('/api/v1/functions/hit/invoke', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.json()).then(j => String(j.result))`); got != "2" {
		t.Errorf("the console's own invoke: %q", got)
	}
}
