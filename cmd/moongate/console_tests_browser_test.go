package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moongate/moongate/gateway/console/consoletest"
	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

// The console's Tests panel in a real Chromium against the real binary: tests pasted in
// the panel run on the gateway against the editor's source without deploying (the pass
// and fail lines, the diffs), a deploy with failing tests is refused and the running
// version stays, and a deploy of a version that passes goes live marked tested.
func TestConsoleTestsPanelInBrowser(t *testing.T) {
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	dir, cfg := writeQuickstart(t, "embedded", mqttPort, apiPort)
	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	g := startGateway(t, dir, cfg, apiPort)
	defer g.stop(t)
	id := consoletest.TestID
	fnURL := g.api + "/api/v1/functions/temp-alert"

	testYAML, err := os.ReadFile("../../examples/quickstart/functions/temp_alert_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(dir, "functions", "temp_alert.lua"))
	if err != nil {
		t.Fatal(err)
	}
	badSrc := strings.Replace(string(src), `"alerts/"`, `"alarms/"`, 1)

	// A live event saved as a test case: its event, and the result its run returned.
	b.Open(g.api + "/")
	b.WaitVisible(`[data-testid="live-state"][data-state="open"]`)
	dev := mqttClient(t, fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), "panel-device")
	poll.Within(t, 20*time.Second, "the device's reading in the live table", func() bool {
		if tok := dev.Publish("sensors/kitchen/temp", 1, false, `{"temp": 20}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		return b.Count(`[data-testid="live-row"][data-type="invocation"]`) > 0
	})
	// Rows that arrive move the others down: pause the table once every event has its
	// invocation, so that the clicks land on the rows they aim at.
	poll.Within(t, 10*time.Second, "an invocation for every event", func() bool {
		return b.Count(`[data-testid="live-row"][data-type="event"]`) == b.Count(`[data-testid="live-row"][data-type="invocation"]`)
	})
	b.Click(id("live-pause"))
	b.Click(`[data-testid="live-row"][data-type="event"]`)
	b.Click(id("live-test-case"))
	yaml := b.WaitText(id("live-test-case-yaml"), `mqtt: {topic: "sensors/kitchen/temp", payload: {"temp":20}, qos: 1}`)
	if !strings.Contains(yaml, "result: null") {
		t.Errorf("the saved case reads %q, want the run's result", yaml)
	}
	b.Screenshot("live-test-case")

	// The case runs in the Tests panel.
	b.Open(g.api + "/#/fn/temp-alert")
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="temp-alert"]`)
	b.SetValue(id("tests-input"), "env: {THRESHOLD: \"30\"}\ncases:\n"+yaml)
	b.Click(id("tests-run"))
	b.WaitText(id("tests-summary"), "1 passed, 0 failed")

	b.SetValue(id("tests-input"), string(testYAML))
	b.SetValue(id("editor-input"), badSrc)

	// Run tests: the editor's source, not deployed.
	b.Click(id("tests-run"))
	b.WaitText(id("tests-summary"), "2 passed, 2 failed")
	if n := b.Count(`[data-testid="test-case"][data-ok="false"]`); n != 2 {
		t.Errorf("%d failing case lines, want 2", n)
	}
	if d := b.Text(id("test-diffs")); !strings.Contains(d, `publishes[0].topic: want "alerts/kitchen", got "alarms/kitchen"`) {
		t.Errorf("the first failing case's diffs read %q", d)
	}
	b.Screenshot("tests-failing")
	if _, doc := apiJSON(t, http.MethodGet, fnURL, nil); doc["version"] != float64(1) {
		t.Fatalf("Run tests deployed: version %v", doc["version"])
	}

	// Deploy sends the tests along: refused, the running version stays.
	b.Click(id("deploy"))
	b.WaitText(id("deploy-status"), "2 of 4 test cases failed")
	if _, doc := apiJSON(t, http.MethodGet, fnURL, nil); doc["version"] != float64(1) {
		t.Fatalf("a deploy with failing tests went live: version %v", doc["version"])
	}

	// Fixed: green, then deployed and marked tested.
	b.SetValue(id("editor-input"), string(src))
	b.Click(id("tests-run"))
	b.WaitText(id("tests-summary"), "4 passed, 0 failed")
	b.Click(id("deploy"))
	b.WaitText(id("deploy-status"), "Deployed v2, 4 test cases passed")
	b.Screenshot("tests-deployed")
	if _, doc := apiJSON(t, http.MethodGet, fnURL, nil); doc["version"] != float64(2) || doc["tested"] != true {
		t.Errorf("after the green deploy: version %v tested %v", doc["version"], doc["tested"])
	}
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("JavaScript errors: %q", errs)
	}
}
