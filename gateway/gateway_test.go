package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/sync/store"
)

// testGateway is an in-process gateway on free loopback ports with its data in a temp dir.
type testGateway struct {
	g      *Gateway
	api    string
	broker string
	cancel context.CancelFunc
	done   chan error
}

func startTest(t *testing.T, dir, yaml string) *testGateway {
	t.Helper()
	path := filepath.Join(dir, "moongate.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(cfg); err != nil {
		t.Fatal(err)
	}
	return startConfig(t, cfg)
}

func (tg *testGateway) stop(t *testing.T) {
	if tg.cancel == nil {
		return
	}
	tg.cancel()
	tg.cancel = nil
	select {
	case err := <-tg.done:
		if err != nil {
			t.Errorf("gateway run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("gateway did not stop within 5s")
	}
}

func baseConfig(dir string, extra string) string {
	return fmt.Sprintf(`gateway:
  id: test-gw
  data_dir: %s
  console: {listen: 127.0.0.1:0}
mqtt:
  broker: embedded
  embedded: {listen: 127.0.0.1:0}
%s`, filepath.Join(dir, "data"), extra)
}

type apiResult struct {
	status int
	body   map[string]any
	raw    string
}

func call(t *testing.T, method, url, token string, body any) apiResult {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := apiResult{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

const counterFn = `
function handle(event)
  local n = kv.incr("count")
  kv.set("last", {topic = event.topic, n = n})
  cloud.emit("seen", {n = n})
  return {n = n, v = VERSION_TAG}
end
`

func src(tag string) string {
	return strings.Replace(counterFn, "VERSION_TAG", fmt.Sprintf("%q", tag), 1)
}

// The API deploys versioned functions durably, refuses a broken one with its line while the
// old version keeps running, rolls back, shows KV, and all of it survives a restart.
func TestAPIDeployInvokeRollbackRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := baseConfig(dir, "")
	tg := startTest(t, dir, cfg)
	fn := tg.api + "/api/v1/functions/counter"

	r := call(t, "PUT", fn, "", map[string]any{"source": src("v1"), "triggers": []string{"mqtt:count/#"}})
	if r.status != http.StatusCreated || r.body["version"].(float64) != 1 {
		t.Fatalf("deploy v1: %d %s", r.status, r.raw)
	}
	r = call(t, "PUT", fn, "", map[string]any{"source": "function handle(e)\n  return 1 +\nend\n"})
	if r.status != http.StatusBadRequest || r.body["line"] == nil || r.body["line"].(float64) != 3 {
		t.Fatalf("broken deploy: want 400 with line 3, got %d %s", r.status, r.raw)
	}
	r = call(t, "POST", fn+"/invoke", "", map[string]any{"topic": "count/a", "payload": map[string]any{"x": 1}})
	if r.status != http.StatusOK || r.body["error"] != nil && r.body["error"] != "" {
		t.Fatalf("invoke: %d %s", r.status, r.raw)
	}
	if res := r.body["result"].(map[string]any); res["v"] != "v1" || res["n"].(float64) != 1 {
		t.Fatalf("invoke after a refused deploy must run v1: %s", r.raw)
	}
	r = call(t, "PUT", fn, "", map[string]any{"source": src("v2")})
	if r.status != http.StatusOK || r.body["version"].(float64) != 2 {
		t.Fatalf("deploy v2: %d %s", r.status, r.raw)
	}
	if tr := r.body["triggers"].([]any); len(tr) != 1 || tr[0] != "mqtt:count/#" {
		t.Fatalf("an absent field keeps the current value: triggers %v", tr)
	}
	r = call(t, "POST", fn+"/invoke", "", map[string]any{"topic": "count/a"})
	if res := r.body["result"].(map[string]any); res["v"] != "v2" || res["n"].(float64) != 2 {
		t.Fatalf("invoke v2: %s", r.raw)
	}
	r = call(t, "POST", fn+"/rollback", "", map[string]any{})
	if r.status != http.StatusOK || r.body["version"].(float64) != 3 {
		t.Fatalf("rollback: %d %s", r.status, r.raw)
	}
	r = call(t, "POST", fn+"/invoke", "", nil)
	if res := r.body["result"].(map[string]any); res["v"] != "v1" {
		t.Fatalf("after rollback the v1 code runs: %s", r.raw)
	}
	r = call(t, "GET", fn+"/kv", "", nil)
	items := r.body["items"].([]any)
	if len(items) != 2 || items[0].(map[string]any)["key"] != "count" || items[0].(map[string]any)["value"].(float64) != 3 {
		t.Fatalf("kv: %s", r.raw)
	}

	tg.stop(t)
	tg = startTest(t, dir, cfg)
	fn = tg.api + "/api/v1/functions/counter"
	r = call(t, "GET", fn, "", nil)
	if r.status != http.StatusOK || r.body["version"].(float64) != 3 || len(r.body["versions"].([]any)) != 3 {
		t.Fatalf("after restart: %d %s", r.status, r.raw)
	}
	r = call(t, "POST", fn+"/invoke", "", nil)
	if res := r.body["result"].(map[string]any); res["v"] != "v1" || res["n"].(float64) != 4 {
		t.Fatalf("after restart, state and version persist: %s", r.raw)
	}
	if r := call(t, "DELETE", fn+"?purge=1", "", nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", fn, "", nil); r.status != http.StatusNotFound || r.body["error"] == nil {
		t.Fatalf("after delete: %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", tg.api+"/api/v1/nope", "", nil); r.status != http.StatusNotFound || r.body["error"] == nil {
		t.Fatalf("unknown endpoint: %d %s", r.status, r.raw)
	}
}

// Off loopback a token is required, compared for every API call; deploys without it fail.
func TestAPIToken(t *testing.T) {
	dir := t.TempDir()
	cfg := strings.Replace(baseConfig(dir, ""), "console: {listen: 127.0.0.1:0}", "console: {listen: 127.0.0.1:0, token: s3cret}", 1)
	tg := startTest(t, dir, cfg)
	body := map[string]any{"source": src("x"), "triggers": []string{"mqtt:x"}}
	if r := call(t, "PUT", tg.api+"/api/v1/functions/f", "", body); r.status != http.StatusUnauthorized || r.body["error"] != "unauthorized" {
		t.Fatalf("deploy without token: %d %s", r.status, r.raw)
	}
	if r := call(t, "PUT", tg.api+"/api/v1/functions/f", "wrong", body); r.status != http.StatusUnauthorized {
		t.Fatalf("deploy with a wrong token: %d", r.status)
	}
	if r := call(t, "PUT", tg.api+"/api/v1/functions/f", "s3cret", body); r.status != http.StatusCreated {
		t.Fatalf("deploy with the token: %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", tg.api+"/metrics", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("metrics without token: %d", r.status)
	}
	if r := call(t, "GET", tg.api+"/metrics", "s3cret", nil); r.status != http.StatusOK || !strings.Contains(r.raw, "moongate_functions 1") {
		t.Fatalf("metrics: %d %.300s", r.status, r.raw)
	}
}

// Messages on one topic are handled in order, each seeing the state the previous one left;
// a failing function is counted and dead-lettered and does not disturb the others.
func TestOrderAndIsolation(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "seq.lua"), []byte(`
function handle(event)
  local key = "last/" .. event.topic
  local last = kv.get(key) or 0
  if event.payload.n ~= last + 1 then
    error("out of order on " .. event.topic .. ": " .. event.payload.n .. " after " .. last)
  end
  kv.set(key, event.payload.n)
end
`), 0o644)
	os.WriteFile(filepath.Join(dir, "bad.lua"), []byte("function handle(event)\n  error('boom')\nend\n"), 0o644)
	tg := startTest(t, dir, baseConfig(dir, `functions:
  - {name: seq, source: seq.lua, triggers: ["mqtt:seq/+@1"], concurrency: 4, retries: 0}
  - {name: bad, source: bad.lua, triggers: ["mqtt:seq/+@1"], retries: 1}
`))
	c := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID("dev"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	const topics, per = 8, 50
	var toks []paho.Token
	for i := 1; i <= per; i++ {
		for k := 0; k < topics; k++ {
			toks = append(toks, c.Publish(fmt.Sprintf("seq/t%d", k), 1, false, fmt.Sprintf(`{"n": %d}`, i)))
		}
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish not acknowledged: %v", tok.Error())
		}
	}
	// Every acknowledged message has committed: the state is final now.
	for k := 0; k < topics; k++ {
		v, ok, err := tg.g.store.KVGet("seq", fmt.Sprintf("last/seq/t%d", k))
		if err != nil || !ok || string(v) != fmt.Sprint(per) {
			t.Errorf("topic %d: last=%s ok=%v err=%v, want %d", k, v, ok, err, per)
		}
	}
	st := &tg.g.registry.entry("seq").stats
	if st.errors.Load() != 0 || st.invocations.Load() != topics*per {
		t.Errorf("seq: %d invocations, %d errors", st.invocations.Load(), st.errors.Load())
	}
	bad := &tg.g.registry.entry("bad").stats
	if bad.invocations.Load() != 2*topics*per {
		t.Errorf("bad: %d invocations, want %d (1 retry each)", bad.invocations.Load(), 2*topics*per)
	}
	dead, err := tg.g.store.Read(store.DeadStream, 0, 10000, 64<<20)
	if err != nil || len(dead) != topics*per {
		t.Fatalf("dead letters: %d, err %v", len(dead), err)
	}
	var d deadRecord
	if err := json.Unmarshal(dead[0].Data, &d); err != nil || d.Function != "bad" || !strings.Contains(d.Error, "boom") || d.Tries != 2 {
		t.Errorf("dead letter: %+v %v", d, err)
	}
}

// token: generate creates a token on first start, mode 0600 in the data dir, and keeps it.
func TestGeneratedToken(t *testing.T) {
	dir := t.TempDir()
	cfg := strings.Replace(baseConfig(dir, ""), "console: {listen: 127.0.0.1:0}", "console: {listen: 127.0.0.1:0, token: generate}", 1)
	tg := startTest(t, dir, cfg)
	path := filepath.Join(dir, "data", "console.token")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, mode %v", err, fi.Mode())
	}
	b, _ := os.ReadFile(path)
	tok := strings.TrimSpace(string(b))
	if len(tok) < 32 {
		t.Fatalf("token too short: %q", tok)
	}
	if r := call(t, "GET", tg.api+"/api/v1/status", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("status without token: %d", r.status)
	}
	if r := call(t, "GET", tg.api+"/api/v1/status", tok, nil); r.status != http.StatusOK {
		t.Fatalf("status with the generated token: %d %s", r.status, r.raw)
	}
	tg.stop(t)
	tg = startTest(t, dir, cfg)
	if r := call(t, "GET", tg.api+"/api/v1/status", tok, nil); r.status != http.StatusOK {
		t.Fatalf("the token changed across a restart: %d", r.status)
	}
	// An emptied token file must not turn authentication off: a new token is made.
	tg.stop(t)
	if err := os.WriteFile(path, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg = startTest(t, dir, cfg)
	if r := call(t, "GET", tg.api+"/api/v1/status", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("with an emptied token file, status without token: %d", r.status)
	}
	b, _ = os.ReadFile(path)
	if n := len(strings.TrimSpace(string(b))); n < 32 {
		t.Fatalf("no new token in the emptied file: %q", b)
	}
}
