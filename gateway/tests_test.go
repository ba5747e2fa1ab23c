package gateway

import (
	"net/http"
	"strings"
	"testing"
)

// A gateway built without a test runner never deploys untested what came with tests: the
// deploy and the dry run of tests are refused, the running version stays, and a deploy
// without tests says tested: false.
func TestDeployWithTestsNeedsARunner(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "thermo.lua", thermoSource("v1"))
	tg := startYAML(t, dir, baseConfig(dir, `functions:
  - {name: thermo, source: thermo.lua, triggers: ["mqtt:sensors/+/temp"]}
`))
	url := tg.api + "/api/v1/functions/thermo"
	tests := []TestFile{{File: "thermo_test.yaml", YAML: "cases: []"}}
	for _, path := range []string{"", "/test"} {
		method := http.MethodPut
		if path != "" {
			method = http.MethodPost
		}
		r := call(t, method, url+path, "", map[string]any{"source": thermoSource("v2"), "tests": tests})
		if r.status != http.StatusBadRequest || r.body["field"] != "tests" || !strings.Contains(r.raw, "runs no function tests") {
			t.Errorf("%s %s with tests: %d %s", method, path, r.status, r.raw)
		}
	}
	r := call(t, http.MethodGet, url, "", nil)
	if r.body["version"] != float64(1) || r.body["tested"] != false {
		t.Errorf("after refused deploys: %s", r.raw)
	}
}
