package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// The version history keeps the newest gateway.version_history versions and lists them a
// page at a time; a rollback to a pruned version says why it cannot.
func TestVersionHistoryBounded(t *testing.T) {
	dir := t.TempDir()
	tg := startYAML(t, dir, strings.Replace(baseConfig(dir, ""), "  id: test-gw\n", "  id: test-gw\n  version_history: 8\n", 1))
	for i := 1; i <= 30; i++ {
		body := map[string]any{"source": fmt.Sprintf("-- %d\nfunction handle(e) end", i), "triggers": []string{}}
		if r := call(t, "PUT", tg.api+"/api/v1/functions/h", "", body); r.status != http.StatusCreated && r.status != http.StatusOK {
			t.Fatalf("deploy %d: %d %s", i, r.status, r.raw)
		}
	}
	type page struct {
		Version  int `json:"version"`
		Versions []struct {
			Version int `json:"version"`
		} `json:"versions"`
		More bool `json:"versions_more"`
	}
	get := func(query string) (page, int) {
		r := call(t, "GET", tg.api+"/api/v1/functions/h"+query, "", nil)
		var p page
		if r.status == http.StatusOK {
			if err := json.Unmarshal([]byte(r.raw), &p); err != nil {
				t.Fatal(err)
			}
		}
		return p, r.status
	}
	numbers := func(p page) string {
		var s []string
		for _, v := range p.Versions {
			s = append(s, fmt.Sprint(v.Version))
		}
		return strings.Join(s, " ") + fmt.Sprintf(" more=%v", p.More)
	}
	if p, _ := get("?history_limit=5"); p.Version != 30 || numbers(p) != "30 29 28 27 26 more=true" {
		t.Fatalf("first page: version %d, %s", p.Version, numbers(p))
	}
	if p, _ := get("?history_before=26&history_limit=5"); numbers(p) != "25 24 23 more=false" {
		t.Fatalf("second page: %s (8 versions kept)", numbers(p))
	}
	if _, status := get("?version=22"); status != http.StatusNotFound {
		t.Fatalf("a pruned version answered %d", status)
	}
	if _, status := get("?history_limit=1000"); status != http.StatusBadRequest {
		t.Fatalf("a page of 1000 answered %d", status)
	}
	r := call(t, "POST", tg.api+"/api/v1/functions/h/rollback", "", map[string]int{"version": 3})
	if r.status != http.StatusNotFound || !strings.Contains(r.raw, "version_history") {
		t.Fatalf("rollback to a pruned version: %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", tg.api+"/api/v1/functions/h/rollback", "", map[string]int{}); r.status != http.StatusOK {
		t.Fatalf("rollback to the previous version: %d %s", r.status, r.raw)
	}
	if p, _ := get(""); p.Version != 31 || len(p.Versions) != 8 {
		t.Fatalf("after the rollback: version %d with %d versions kept", p.Version, len(p.Versions))
	}
}
