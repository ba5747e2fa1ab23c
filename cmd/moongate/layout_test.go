package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The layering of docs/ARCHITECTURE.md, checked: the leaves (mqtt, luafn, sensors,
// sync/store, sync/sink, firmware, fleet) do not import each other, except sync/sink reading
// sync/store's outbox; internal/ packages import no leaf; nothing imports gateway but
// cmd/moongate.
func TestLayering(t *testing.T) {
	const mod = "github.com/moongate/moongate/"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	leaves := []string{"mqtt", "luafn", "sensors", "sync/store", "sync/sink", "firmware", "fleet"}
	leafOf := func(pkg string) string {
		for _, l := range leaves {
			if pkg == l || strings.HasPrefix(pkg, l+"/") {
				return l
			}
		}
		return ""
	}
	allowed := map[[2]string]bool{{"sync/sink", "sync/store"}: true}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, ok := strings.CutPrefix(f[0], mod)
		if !ok {
			continue
		}
		for _, imp := range f[1:] {
			dep, ok := strings.CutPrefix(imp, mod)
			if !ok {
				continue
			}
			from, to := leafOf(pkg), leafOf(dep)
			switch {
			case from != "" && to != "" && from != to && !allowed[[2]string{from, to}]:
				t.Errorf("leaf %s imports leaf %s", pkg, dep)
			case strings.HasPrefix(pkg, "internal/") && to != "":
				t.Errorf("%s imports the leaf %s: internal packages serve the leaves", pkg, dep)
			case (dep == "gateway" || strings.HasPrefix(dep, "gateway/")) && !strings.HasPrefix(pkg, "gateway") && pkg != "cmd/moongate":
				t.Errorf("%s imports %s: only cmd/moongate wires the gateway", pkg, dep)
			}
		}
	}
}
