package gateway

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/fleet"
	"github.com/moongate/moongate/gateway/console/consoletest"
	"github.com/moongate/moongate/internal/mosquittotest"
)

// pushFleet signs doc and retains it on its target's topic, as moongate fleet push does.
func pushFleet(t *testing.T, c paho.Client, priv string, doc fleet.Document) {
	t.Helper()
	b, _ := json.Marshal(doc)
	s, err := fleet.Sign(b, priv)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(s)
	topic, _ := fleet.DesiredTopic(doc.Target)
	if tok := c.Publish(topic, 1, true, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("push: %v", tok.Error())
	}
}

// The Fleet tab in a real headless Chromium, the cloud broker a real Mosquitto: it shows
// the connection, the revision applied and the functions it brought, and, after a
// revision that does not compile, the refusal while the old revision runs on.
func TestConsoleFleetInBrowser(t *testing.T) {
	cloud := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	dir := t.TempDir()
	pub, priv, err := fleet.Keygen()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "fleet.pub", pub)
	tg := startTest(t, dir, baseConfig(dir, fmt.Sprintf("fleet: {broker: %s, groups: [lab], keys: [%s/fleet.pub]}\n", cloud.URL, dir)))
	pusher := paho.NewClient(paho.NewClientOptions().AddBroker(cloud.URL).SetClientID("pusher"))
	if tok := pusher.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { pusher.Disconnect(100) })
	double := fleet.Function{Name: "double", Source: "function handle(e) return e.payload.x * 2 end", Triggers: []string{"mqtt:in/double"}}
	pushFleet(t, pusher, priv, fleet.Document{Revision: 1, Target: "group:lab", Functions: []fleet.Function{double}})

	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	id := consoletest.TestID
	b.Open(tg.api + "/#/fleet")
	b.WaitText(id("fleet-broker-state"), "CONNECTED") // the pills show their words in capitals (CSS)
	b.WaitText(id("fleet-groups"), "lab")
	b.WaitText(`[data-testid="fleet-layer"][data-target="group:lab"]`, "group:lab revision 1")
	b.WaitText(`[data-testid="fleet-function"][data-name="double"]`, "group:lab r1")
	if got := b.Eval(`String(document.getElementById("fleet-off").hidden)`); got != "true" {
		t.Errorf("the not-in-a-fleet notice shows on a fleet gateway (hidden: %s)", got)
	}

	broken := double
	broken.Source = "function handle(e) return e.payload.x * end"
	pushFleet(t, pusher, priv, fleet.Document{Revision: 2, Target: "group:lab", Functions: []fleet.Function{broken}})
	b.WaitText(id("fleet-error"), "Last document refused: group:lab revision 2 not applied")
	b.WaitText(`[data-testid="fleet-layer"][data-target="group:lab"]`, "group:lab revision 1")
	b.Screenshot("desktop-fleet-refused")
}
