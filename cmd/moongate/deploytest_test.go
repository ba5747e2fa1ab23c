package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moongate/moongate/internal/loopback"
)

// apiJSON sends body (JSON) to the gateway and decodes its answer into a map.
func apiJSON(t *testing.T, method, url string, body any) (int, map[string]any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: answer: %v", method, url, err)
	}
	return resp.StatusCode, out
}

// Deploy only what passes: `moongate deploy --test` runs the tests on the gateway against
// the new version; a failing case refuses the deploy with its diff and the old version
// keeps running; the live KV is never touched by the tests; the API cannot skip attached
// tests, and a deploy without tests is marked tested: false. POST .../test runs them
// without deploying.
func TestDeployWithTests(t *testing.T) {
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	dir, cfg := writeQuickstart(t, "embedded", mqttPort, apiPort)
	g := startGateway(t, dir, cfg, apiPort)
	defer g.stop(t)
	fnURL := g.api + "/api/v1/functions/temp-alert"

	testYAML, err := os.ReadFile("../../examples/quickstart/functions/temp_alert_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	testFile := filepath.Join(dir, "functions", "temp_alert_test.yaml")
	if err := os.WriteFile(testFile, testYAML, 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "functions", "temp_alert.lua")
	src, _ := os.ReadFile(good)
	bad := filepath.Join(dir, "functions", "temp_alert_bad.lua")
	badSrc := strings.Replace(string(src), `"alerts/"`, `"alarms/"`, 1)
	if badSrc == string(src) {
		t.Fatal("the quickstart function no longer publishes to alerts/: update the test")
	}
	if err := os.WriteFile(bad, []byte(badSrc), 0o644); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := moongate(t, "deploy", "--api", g.api, "temp-alert", good, "--test", testFile)
	if code != exitOK || !strings.Contains(out, "deployed temp-alert version 2") || !strings.Contains(out, "4 test cases passed") {
		t.Fatalf("deploy --test: exit %d\n%s%s", code, out, errOut)
	}
	_, doc := apiJSON(t, http.MethodGet, fnURL, nil)
	if doc["tested"] != true || doc["tests_passed"] != float64(4) {
		t.Errorf("after a tested deploy: tested=%v tests_passed=%v", doc["tested"], doc["tests_passed"])
	}
	if _, out, _ := moongate(t, "functions", "--api", g.api); !strings.Contains(out, "temp-alert  2        4 cases") {
		t.Errorf("moongate functions after a tested deploy:\n%s", out)
	}

	code, out, errOut = moongate(t, "deploy", "--api", g.api, "temp-alert", bad, "--test", testFile)
	if code != exitFailure || !strings.Contains(out, "FAIL "+testFile+": a hot reading publishes an alert and emits it") ||
		!strings.Contains(out, `publishes[0].topic: want "alerts/kitchen", got "alarms/kitchen"`) ||
		!strings.Contains(errOut, "test cases failed: not deployed") {
		t.Fatalf("deploy --test of a failing version: exit %d\n%s%s", code, out, errOut)
	}
	_, doc = apiJSON(t, http.MethodGet, fnURL, nil)
	if doc["version"] != float64(2) || strings.Contains(doc["source"].(string), "alarms/") {
		t.Errorf("a refused deploy changed the running version: version %v", doc["version"])
	}
	// The tests' KV (readings/kitchen: 41, then 42) stayed in the sandbox.
	_, kv := apiJSON(t, http.MethodGet, fnURL+"/kv", nil)
	if items := kv["items"].([]any); len(items) != 0 {
		t.Errorf("the tests wrote to the live KV: %v", items)
	}

	// The API: attached tests always run, an empty list or a bad file refuses the deploy.
	tests := []map[string]string{{"file": "t.yaml", "yaml": string(testYAML)}}
	status, ans := apiJSON(t, http.MethodPut, fnURL, map[string]any{"source": badSrc, "tests": tests})
	cases, _ := ans["tests"].(map[string]any)
	if status != http.StatusBadRequest || cases == nil || cases["failed"] != float64(2) || cases["passed"] != float64(2) {
		t.Errorf("PUT with failing tests: %d %v", status, ans)
	}
	for _, body := range []map[string]any{
		{"source": string(src), "tests": []any{}},
		{"source": string(src), "tests": []map[string]string{{"file": "t.yaml", "yaml": "cases: [{name: x}]"}}},
	} {
		if status, ans := apiJSON(t, http.MethodPut, fnURL, body); status != http.StatusBadRequest || ans["field"] != "tests" {
			t.Errorf("PUT %v: %d %v", body["tests"], status, ans)
		}
	}

	// Run tests without deploying: the report, whether they pass or not.
	status, ans = apiJSON(t, http.MethodPost, fnURL+"/test", map[string]any{"source": badSrc, "tests": tests})
	if status != http.StatusOK || ans["failed"] != float64(2) || ans["passed"] != float64(2) {
		t.Errorf("POST test: %d %v", status, ans)
	}
	_, doc = apiJSON(t, http.MethodGet, fnURL, nil)
	if doc["version"] != float64(2) {
		t.Errorf("POST test deployed: version %v", doc["version"])
	}

	// A deploy without tests is marked.
	if status, ans := apiJSON(t, http.MethodPut, fnURL, map[string]any{"source": string(src)}); status != http.StatusOK ||
		ans["tested"] != false || ans["tests_passed"] != nil {
		t.Errorf("PUT without tests: %d tested=%v tests_passed=%v", status, ans["tested"], ans["tests_passed"])
	}
}
