package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store"
)

// A function past gateway.kv_quota fails alone: its commits are refused (dead-lettered with
// the reason), another function's go on, and the API and /metrics show each one's usage.
func TestKVQuotaPerFunction(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "greedy.lua", `function handle(e) kv.set("k/" .. e.payload, e.payload) end`)
	writeFile(t, dir, "modest.lua", `function handle(e) kv.incr("n") end`)
	tg := startYAML(t, dir, strings.Replace(baseConfig(dir, `functions:
  - {name: greedy, source: greedy.lua, triggers: ["mqtt:greedy/#"]}
  - {name: modest, source: modest.lua, triggers: ["mqtt:modest/#"]}
`), "  id: test-gw\n", "  id: test-gw\n  kv_quota: {keys: 5}\n", 1))
	c, _ := connectDevice(t, tg.broker, "filler")
	for i := range 10 {
		c.Publish("greedy/x", 0, false, fmt.Sprint(i)).Wait()
		c.Publish("modest/x", 0, false, "1").Wait()
	}
	dead := func() float64 { return testutil.ToFloat64(tg.g.metrics.deadLetters.WithLabelValues("greedy")) }
	var n float64
	poll.Eventually(t, "5 keys kept, 5 commits refused, the other function's 10 counted", func() bool {
		return dead() == 5 && kvJSON(t, tg, "modest", "n", &n) && n == 10
	})
	r := call(t, "GET", tg.api+"/api/v1/functions/greedy", "", nil)
	var doc struct {
		KV struct {
			Keys      int64 `json:"keys"`
			QuotaKeys int64 `json:"quota_keys"`
		} `json:"kv"`
	}
	if err := json.Unmarshal([]byte(r.raw), &doc); err != nil || doc.KV.Keys != 5 || doc.KV.QuotaKeys != 5 {
		t.Fatalf("GET greedy: %s (%v)", r.raw, err)
	}
	recs, err := tg.g.store.Read(store.DeadStream, 0, 0, 0)
	if err != nil || len(recs) != 5 || !strings.Contains(string(recs[0].Data), "kv quota exceeded") {
		t.Fatalf("dead letters: %d (%v), first %s", len(recs), err, recs[0].Data)
	}
}
