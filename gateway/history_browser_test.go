package gateway

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/moongate/moongate/gateway/console/consoletest"
)

// The function page lists the newest 20 versions, and Older versions pages on to the rest
// the history keeps, in a real browser against the real gateway; the KV usage shows on the
// function's card.
func TestConsoleVersionHistoryPages(t *testing.T) {
	dir := t.TempDir()
	tg := startYAML(t, dir, baseConfig(dir, ""))
	for i := 1; i <= 30; i++ {
		body := map[string]any{"source": fmt.Sprintf("-- %d\nfunction handle(e) kv.set(\"k\", %d) end", i, i), "triggers": []string{}}
		if r := call(t, "PUT", tg.api+"/api/v1/functions/paged", "", body); r.status != http.StatusCreated && r.status != http.StatusOK {
			t.Fatalf("deploy %d: %d %s", i, r.status, r.raw)
		}
	}
	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	id := consoletest.TestID
	b.Open(tg.api + "/#/fn/paged")
	b.WaitVisible(`[data-testid="view-fn"][data-loaded="paged"]`)
	b.WaitVisible(`[data-testid="version"][data-version="30"]`)
	if n := b.Count(id("version")); n != 20 {
		t.Fatalf("%d versions listed, want the newest 20", n)
	}
	b.Click(`[data-testid="versions-more"] button`)
	b.WaitVisible(`[data-testid="version"][data-version="1"]`)
	if n := b.Count(id("version")); n != 30 {
		t.Fatalf("%d versions listed after Older versions, want 30", n)
	}
	if b.Count(id("versions-more")) != 0 {
		t.Error("Older versions still offered with every version listed")
	}
	b.Screenshot("history-paged")

	if r := call(t, "POST", tg.api+"/api/v1/functions/paged/invoke", "", map[string]any{}); r.status != http.StatusOK {
		t.Fatalf("invoke: %d %s", r.status, r.raw)
	}
	b.Open(tg.api + "/#/functions")
	b.WaitText(`[data-testid="fn-card"][data-name="paged"] [data-testid="fn-kv"]`, "KV 1 key")
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("errors in the page: %q", errs)
	}
}
