package gateway

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/poll"
)

// switchPair is revision rev of two fleet functions: a-relay passes each message on to
// b-check, stamped with its revision; b-check counts the stamps newer than its own, which
// only a revision half applied can produce (a-relay switched, b-check not yet).
func switchPair(rev int) []functionSpec {
	base := functionSpec{Timeout: config.DefaultFunctionTimeout, Memory: int64(config.DefaultFunctionMemory),
		Concurrency: 2, Retries: 1, Fleet: "group:lab", FleetRevision: uint64(rev), FleetHash: fmt.Sprint(rev)}
	a, b := base, base
	a.Name, a.Triggers = "a-relay", []string{"mqtt:in/#@1"}
	a.Source = fmt.Sprintf(`local REV = %d
function handle(e) mqtt.publish("mid/" .. e.topic, {rev = REV}, {qos = 1}) end`, rev)
	b.Name, b.Triggers = "b-check", []string{"mqtt:mid/#@1"}
	b.Source = fmt.Sprintf(`local REV = %d
function handle(e)
  local seen = e.payload.rev
  if seen > REV then kv.incr("mixed") end
  if seen > (kv.get("seen") or 0) then kv.set("seen", seen) end
end`, rev)
	return []functionSpec{a, b}
}

// kvNumber is a number the function keeps in its KV, 0 while the key is not set.
func kvNumber(t *testing.T, tg *testGateway, fn, key string) int {
	t.Helper()
	r := call(t, "GET", tg.api+"/api/v1/functions/"+fn+"/kv?prefix="+key, "", nil)
	var body struct{ Items []kvItem }
	if err := json.Unmarshal([]byte(r.raw), &body); err != nil {
		t.Fatalf("GET %s kv: %d %s", fn, r.status, r.raw)
	}
	for _, it := range body.Items {
		if it.Key == key {
			var n int
			if err := json.Unmarshal(it.Value, &n); err != nil {
				t.Fatalf("%s kv %s: %s", fn, key, it.Value)
			}
			return n
		}
	}
	return 0
}

// A fleet revision switches all its functions in one step as events see it: under a
// stream of events, repeated revisions of a relay and the function it feeds never let the
// relay's new version feed the old version of the other.
func TestFleetRevisionSwitchesAtOnce(t *testing.T) {
	dir := t.TempDir()
	tg := startTest(t, dir, baseConfig(dir, ""))
	defer tg.stop(t)
	if _, _, err := tg.g.registry.applyFleet(switchPair(1)); err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID("stream"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	stop := make(chan struct{})
	var streams sync.WaitGroup
	for k := range 4 { // four ordering keys: their events run in parallel
		streams.Add(1)
		go func() {
			defer streams.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.Publish(fmt.Sprintf("in/%d", k), 1, false, "{}").WaitTimeout(5 * time.Second)
			}
		}()
	}
	const revisions = 30
	for rev := 2; rev <= revisions; rev++ {
		if _, _, err := tg.g.registry.applyFleet(switchPair(rev)); err != nil {
			t.Fatal(err)
		}
		// The relay's new version has run and fed the other: the window was crossed.
		poll.Eventually(t, fmt.Sprintf("b-check sees revision %d", rev), func() bool { return kvNumber(t, tg, "b-check", "seen") >= rev })
	}
	close(stop)
	streams.Wait()
	if n := kvNumber(t, tg, "b-check", "mixed"); n != 0 {
		t.Fatalf("%d events of a new a-relay were handled by an older b-check: a revision was seen half applied", n)
	}
}
