package gateway

import (
	"testing"
	"time"

	"github.com/moongate/moongate/gateway/console/consoletest"
)

// The Sync tab says plainly when records have nowhere to go: with no sink configured, and
// then, once a function emitted, how many records of which stream no sink takes.
func TestConsoleSyncSaysWhenRecordsHaveNowhereToGo(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "emitter.lua", "function handle(e) cloud.emit(\"readings\", {t = 1}) return {ok = true} end\n")
	tg := startYAML(t, dir, baseConfig(dir, `functions:
  - {name: emitter, source: emitter.lua, triggers: ["mqtt:in/#"], emit: results}
`))
	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	warning := consoletest.TestID("sync-unrouted")

	b.Open(tg.api + "/#/sync")
	b.WaitText(warning, "No sink is configured: records emitted to the cloud wait here until the outbox drops them.")

	for range 2 {
		if r := call(t, "POST", tg.api+"/api/v1/functions/emitter/invoke", "", map[string]any{"topic": "in/a"}); r.body["error"] != nil {
			t.Fatalf("invoke: %s", r.raw)
		}
	}
	b.Open(tg.api + "/#/sync")
	b.WaitText(warning, "4 records have nowhere to go: no sink takes readings (2), results (2).")
	b.Screenshot("desktop-sync-unrouted")
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("errors in the page: %q", errs)
	}
}
