package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/poll"
)

// lifecycleConfig is a config whose functions are the given names, each in its own file
// with the counter source tagged by name and tag.
func lifecycleConfig(t *testing.T, dir string, fns map[string]string) string {
	var b strings.Builder
	b.WriteString("functions:\n")
	for _, name := range sortedNames(fns) {
		file := name + ".lua"
		writeFile(t, dir, file, fns[name])
		fmt.Fprintf(&b, "  - {name: %s, source: %s, triggers: [\"mqtt:%s/#\"]}\n", name, file, name)
	}
	return baseConfig(dir, b.String())
}

func sortedNames(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// functionVersions lists the active functions and their versions, as the API shows them.
func functionVersions(t *testing.T, tg *testGateway) map[string]int {
	t.Helper()
	r := call(t, "GET", tg.api+"/api/v1/functions", "", nil)
	out := map[string]int{}
	for _, f := range r.body["functions"].([]any) {
		m := f.(map[string]any)
		out[m["name"].(string)] = int(m["version"].(float64))
	}
	return out
}

func versionNumbers(t *testing.T, tg *testGateway, name string) []int {
	t.Helper()
	r := call(t, "GET", tg.api+"/api/v1/functions/"+name, "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", name, r.status, r.raw)
	}
	var out []int
	for _, v := range r.body["versions"].([]any) {
		out = append(out, int(v.(map[string]any)["version"].(float64)))
	}
	return out
}

// Every function active before a stop is active after it, at the same version: the config's
// (all of them, not only the first) and those deployed through the API.
func TestRestartKeepsEveryFunction(t *testing.T) {
	dir := t.TempDir()
	cfg := lifecycleConfig(t, dir, map[string]string{"alpha": src("a1"), "beta": src("b1")})
	tg := startTest(t, dir, cfg)
	if r := call(t, "PUT", tg.api+"/api/v1/functions/gamma", "", map[string]any{"source": src("g1"), "triggers": []string{"mqtt:gamma/#"}}); r.status != http.StatusCreated {
		t.Fatalf("deploy gamma: %d %s", r.status, r.raw)
	}
	if r := call(t, "PUT", tg.api+"/api/v1/functions/beta", "", map[string]any{"source": src("b2")}); r.status != http.StatusOK {
		t.Fatalf("redeploy beta: %d %s", r.status, r.raw)
	}
	want := map[string]int{"alpha": 1, "beta": 2, "gamma": 1}
	if got := functionVersions(t, tg); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("before restart: %v", got)
	}
	for restart := 1; restart <= 2; restart++ {
		tg.stop(t)
		tg = startTest(t, dir, cfg)
		if got := functionVersions(t, tg); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after restart %d: %v, want %v", restart, got, want)
		}
	}
	if r := call(t, "POST", tg.api+"/api/v1/functions/beta/invoke", "", nil); r.body["result"].(map[string]any)["v"] != "b2" {
		t.Fatalf("beta runs the API's version after restarts: %s", r.raw)
	}
}

// runErr starts a gateway on cfg and returns what Run returned, for configs it refuses.
func runErr(t *testing.T, dir, yaml string) error {
	t.Helper()
	path := filepath.Join(dir, "moongate.yaml")
	writeFile(t, dir, "moongate.yaml", yaml)
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	g := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case err := <-done:
		cancel()
		return err
	case <-g.Ready():
		cancel()
		<-done
		return nil
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("gateway neither started nor refused to")
		return nil
	}
}

// A config that run refused once is refused again, and the refusal stores nothing: the
// functions that did compile are not deployed by a start that failed.
func TestRefusedConfigRefusedAgain(t *testing.T) {
	dir := t.TempDir()
	cfg := lifecycleConfig(t, dir, map[string]string{"alpha": src("a1"), "beta": src("b1"), "gamma": "function handle(e) return 1 +  end"})
	for try := 1; try <= 2; try++ {
		err := runErr(t, dir, cfg)
		var list config.ErrorList
		if !errors.As(err, &list) || !strings.Contains(err.Error(), "functions[2]") {
			t.Fatalf("start %d: %v, want the config error of functions[2]", try, err)
		}
	}
	writeFile(t, dir, "gamma.lua", src("g1"))
	tg := startTest(t, dir, cfg)
	if got := functionVersions(t, tg); fmt.Sprint(got) != fmt.Sprint(map[string]int{"alpha": 1, "beta": 1, "gamma": 1}) {
		t.Fatalf("after the fix: %v", got)
	}
}

// A config function deleted through the API stays deleted across restarts until its entry
// changes; then it comes back as its next version, its history whole. A function removed
// from the config stops.
func TestDeleteAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	cfg := lifecycleConfig(t, dir, map[string]string{"alpha": src("a1"), "beta": src("b1")})
	tg := startTest(t, dir, cfg)
	if r := call(t, "PUT", tg.api+"/api/v1/functions/alpha", "", map[string]any{"source": src("a2")}); r.status != http.StatusOK {
		t.Fatalf("redeploy: %d %s", r.status, r.raw)
	}
	if r := call(t, "DELETE", tg.api+"/api/v1/functions/alpha", "", nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	tg.stop(t)
	tg = startTest(t, dir, cfg)
	if got := functionVersions(t, tg); fmt.Sprint(got) != fmt.Sprint(map[string]int{"beta": 1}) {
		t.Fatalf("after restart, the deleted function stays deleted: %v", got)
	}
	tg.stop(t)
	writeFile(t, dir, "alpha.lua", src("a3"))
	cfg = strings.Replace(cfg, "  - {name: beta,", "  - {name: betagone,", 1) // beta leaves the config
	writeFile(t, dir, "betagone.lua", src("x"))
	tg = startTest(t, dir, cfg)
	if got := functionVersions(t, tg); fmt.Sprint(got) != fmt.Sprint(map[string]int{"alpha": 3, "betagone": 1}) {
		t.Fatalf("after the config edit: %v, want alpha back at version 3 and beta gone", got)
	}
	if h := versionNumbers(t, tg, "alpha"); fmt.Sprint(h) != "[3 2 1]" {
		t.Fatalf("alpha's history: %v", h)
	}
	tg.stop(t)
	cfg = strings.Replace(cfg, "  - {name: betagone,", "  - {name: beta,", 1) // the same entry as before
	tg = startTest(t, dir, cfg)
	if got := functionVersions(t, tg); fmt.Sprint(got) != fmt.Sprint(map[string]int{"alpha": 3, "beta": 2}) {
		t.Fatalf("an entry removed and added again is deployed again: %v", got)
	}
}

// After DELETE answers, nothing of the function runs: a long invocation is canceled, its
// queued events are handed back (QoS 0: dropped and counted), and no effect commits.
func TestDeleteStopsFunction(t *testing.T) {
	dir := t.TempDir()
	tg := startTest(t, dir, baseConfig(dir, ""))
	slow := `function handle(e)
		if e.payload == "spin" then while true do end end
		local n = 0
		for i = 1, 3000000 do n = n + 1 end
		kv.incr("done")
	end`
	body := map[string]any{"source": slow, "triggers": []string{"mqtt:work/#"}, "timeout": "30s", "concurrency": 1}
	if r := call(t, "PUT", tg.api+"/api/v1/functions/slow", "", body); r.status != http.StatusCreated {
		t.Fatalf("deploy: %d %s", r.status, r.raw)
	}
	// Two devices: the one whose reading spins is not read again until it is done (its
	// reading runs on its connection), so the queued readings come from the other.
	var devs []paho.Client
	for _, id := range []string{"spinner", "stepper"} {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID(id))
		if tok := c.Connect(); tok.Wait() && tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		defer c.Disconnect(0)
		devs = append(devs, c)
	}
	devs[0].Publish("work/a", 0, false, "spin").Wait()
	exec := tg.g.registry.entry("slow").exec
	poll.Eventually(t, "the spinning invocation to run", func() bool {
		exec.mu.Lock()
		defer exec.mu.Unlock()
		_, running := exec.busy["mqtt:work/a"]
		return running
	})
	for range 50 {
		devs[1].Publish("work/a", 0, false, "step").Wait() // queued behind the spin, same key
	}
	m := tg.g.metrics
	poll.Eventually(t, "the spinning invocation to run and the rest to queue", func() bool {
		return testutil.ToFloat64(m.events.WithLabelValues("mqtt")) >= 51
	})
	if r := call(t, "DELETE", tg.api+"/api/v1/functions/slow", "", nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if got := testutil.ToFloat64(m.dropped.WithLabelValues("slow", "deleted")); got != 50 {
		t.Fatalf("%v queued QoS 0 events counted as dropped by the delete, want 50", got)
	}
	n, ok, err := tg.g.store.KVGet("slow", "done")
	if err != nil || ok {
		t.Fatalf("an effect committed after the delete: %s %v %v", n, ok, err)
	}
}

// The API refuses a name the config would refuse, naming the field.
func TestAPIRefusesBadNames(t *testing.T) {
	dir := t.TempDir()
	tg := startTest(t, dir, baseConfig(dir, ""))
	for _, name := range []string{"Bad%20Name", "a.b", "-x", "UPPER", strings.Repeat("x", 64), "%2E%2E"} {
		r := call(t, "PUT", tg.api+"/api/v1/functions/"+name, "", map[string]any{"source": src("x"), "triggers": []string{"mqtt:x"}})
		if r.status != http.StatusBadRequest || r.body["field"] != "name" || !strings.Contains(r.raw, "not a valid function name") {
			t.Errorf("PUT %s: %d %s", name, r.status, r.raw)
		}
	}
	if r := call(t, "PUT", tg.api+"/api/v1/functions/ok_name-2", "", map[string]any{"source": src("x"), "triggers": []string{"mqtt:x"}}); r.status != http.StatusCreated {
		t.Errorf("a valid name: %d %s", r.status, r.raw)
	}
}

// No deploy can give a function more than the gateway's ceilings: not the API, not a
// rollback, not the config; the ceilings are the config's to raise.
func TestCeilings(t *testing.T) {
	dir := t.TempDir()
	tg := startTest(t, dir, baseConfig(dir, ""))
	fn := tg.api + "/api/v1/functions/big"
	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"memory": "1000GiB"}, "memory"},
		{map[string]any{"timeout": "100000h"}, "timeout"},
		{map[string]any{"timeout": "0s"}, "timeout"},
		{map[string]any{"concurrency": 1000}, "concurrency"},
		{map[string]any{"retries": 1000}, "retries"},
	} {
		c.body["source"], c.body["triggers"] = src("x"), []string{"mqtt:x"}
		r := call(t, "PUT", fn, "", c.body)
		if r.status != http.StatusBadRequest || r.body["field"] != c.field || !strings.Contains(r.raw, "gateway.ceilings") {
			t.Errorf("deploy %v: %d %s", c.body, r.status, r.raw)
		}
	}
	tg.stop(t)

	writeFile(t, dir, "big.lua", src("x"))
	path := filepath.Join(dir, "moongate.yaml")
	writeFile(t, dir, "moongate.yaml", baseConfig(dir, "functions:\n  - {name: big, source: big.lua, triggers: [\"mqtt:x\"], memory: 1000GiB}\n"))
	if _, err := config.Load(path); err == nil || !strings.Contains(err.Error(), "functions[0].memory") {
		t.Fatalf("a config over the ceiling: %v", err)
	}
	writeFile(t, dir, "moongate.yaml", strings.Replace(baseConfig(dir, "functions:\n  - {name: big, source: big.lua, triggers: [\"mqtt:x\"], memory: 200MiB}\n"),
		"gateway:\n", "gateway:\n  ceilings: {memory: 256MiB}\n", 1))
	if _, err := config.Load(path); err != nil {
		t.Fatalf("a raised ceiling: %v", err)
	}
}

// Listing a function's KV reads and sends at most its byte budget: large values are left
// out with their size, the rest listed.
func TestKVListingBudget(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "big.lua", `function handle(e)
		for i = 1, 30 do kv.set(string.format("big/%02d", i), string.rep("x", 200000)) end
		kv.set("small", 1)
	end`)
	tg := startTest(t, dir, baseConfig(dir, "functions:\n  - {name: big, source: big.lua, triggers: [\"mqtt:x\"], memory: 64MiB, timeout: 5s}\n"))
	if r := call(t, "POST", tg.api+"/api/v1/functions/big/invoke", "", map[string]any{}); r.body["error"] != nil {
		t.Fatalf("invoke: %s", r.raw)
	}
	r := call(t, "GET", tg.api+"/api/v1/functions/big/kv", "", nil)
	if len(r.raw) > 1<<20+64<<10 {
		t.Fatalf("the listing is %d bytes", len(r.raw))
	}
	items := r.body["items"].([]any)
	if len(items) != 31 {
		t.Fatalf("%d items", len(items))
	}
	omitted := 0
	for _, it := range items {
		m := it.(map[string]any)
		if m["omitted"] == true {
			omitted++
			if m["value"] != nil || m["size"].(float64) < 200000 {
				t.Errorf("omitted item %v", m)
			}
		}
		if m["key"] == "small" && m["value"].(float64) != 1 {
			t.Errorf("small: %v", m)
		}
	}
	if omitted == 0 {
		t.Fatal("30 values of 200 KB listed in full")
	}
}
