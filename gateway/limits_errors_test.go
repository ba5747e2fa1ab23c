package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store"
)

// Effects the store can never take end: a key too long for the store fails the
// invocation where the function calls, an emit to a stream name the store refuses fails
// at commit; either way the event is retried, then dead-lettered with the reason, and the
// QoS 1 message is acknowledged, instead of holding its topic for ever.
func TestEffectsTheStoreRefusesEnd(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "longkey.lua", `function handle(e) kv.set(string.rep("k", 300), 1) end`)
	tg := startTest(t, dir, baseConfig(dir, `functions:
  - {name: longkey, source: longkey.lua, triggers: ["mqtt:longkey/#@1"], retries: 1}
`))
	// emit: is not checked against the store's names (a deploy takes any): the commit is
	// where it fails.
	body := map[string]any{"source": "function handle(e) return {x = 1} end", "triggers": []string{"mqtt:longstream/#@1"},
		"emit": strings.Repeat("s", 100), "retries": 1}
	if r := call(t, "PUT", tg.api+"/api/v1/functions/longstream", "", body); r.status != http.StatusCreated {
		t.Fatalf("deploy: %d %s", r.status, r.raw)
	}
	dev := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID("dev"))
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer dev.Disconnect(50)
	for _, topic := range []string{"longkey/a", "longstream/a"} {
		if tok := dev.Publish(topic, 1, false, "1"); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: no PUBACK: the event is held for ever (%v)", topic, tok.Error())
		}
	}
	var dead []deadRecord
	poll.Eventually(t, "both events in $dead", func() bool {
		recs, err := tg.g.store.Read(store.DeadStream, 0, 100, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		dead = dead[:0]
		for _, r := range recs {
			var d deadRecord
			if err := json.Unmarshal(r.Data, &d); err != nil {
				t.Fatal(err)
			}
			dead = append(dead, d)
		}
		return len(dead) == 2
	})
	for _, d := range dead {
		switch {
		case d.Function == "longkey" && strings.Contains(d.Error, "key must be 1 to 256 bytes") && d.Tries == 2:
		case d.Function == "longstream" && strings.Contains(d.Error, "the store refused") && d.Tries == 2:
		default:
			t.Errorf("dead letter %+v", d)
		}
	}
}
