package gateway

import (
	"os"
	"regexp"
	"testing"

	"github.com/moongate/moongate/internal/specdoc"
)

// TestSpecListsEveryRoute keeps docs/SPEC.md §6 current: every pattern the API's mux
// registers in api.go has a row in the route table, and the table has no route the mux
// does not serve.
func TestSpecListsEveryRoute(t *testing.T) {
	src, err := os.ReadFile("api.go")
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	for _, m := range registration.FindAllStringSubmatch(string(src), -1) {
		registered[m[1]] = true
	}
	if len(registered) < 10 {
		t.Fatalf("found only %d routes in api.go: has the way they are registered changed?", len(registered))
	}
	section, err := specdoc.Section(6)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := specdoc.Rows(section)
	if err != nil {
		t.Fatalf("SPEC §6: %v", err)
	}
	for pattern := range registered {
		if _, ok := rows[pattern]; !ok {
			t.Errorf("SPEC §6 has no row for the route `%s`", pattern)
		}
	}
	for name := range rows {
		if routeLike.MatchString(name) && !registered[name] {
			t.Errorf("SPEC §6 lists `%s`, which api.go does not register", name)
		}
	}
}

var (
	// route("GET /api/v1/status", ...) and mux.Handle("/", ...).
	registration = regexp.MustCompile(`(?:\broute|\bmux\.Handle)\("([^"]+)"`)
	routeLike    = regexp.MustCompile(`^([A-Z]+ )?/`)
)
