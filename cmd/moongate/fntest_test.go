package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/poll"
)

func moongate(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// Every example's functions have tests, and they pass against the example's config (its
// triggers, env and limits): `make test` runs them.
func TestExampleFunctionTests(t *testing.T) {
	t.Setenv("CLOUD_URL", "http://127.0.0.1:9/ingest") // weather-station's sink
	for _, ex := range []string{"quickstart", "button-relay", "weather-station", "lan-devices"} {
		dir := filepath.Join("..", "..", "examples", ex)
		code, out, errOut := moongate(t, "test", "-c", filepath.Join(dir, "moongate.yaml"), dir)
		if code != exitOK || !strings.Contains(out, " 0 failed") {
			t.Errorf("%s: exit %d\n%s%s", ex, code, out, errOut)
		}
	}
}

const testedLua = `function handle(event)
  local n = kv.incr("n")
  if event.payload == "boom" then error("boom at " .. n) end
  mqtt.publish("out/" .. n, {n = n, topic = event.topic})
  log.info("published " .. n)
  return {n = n}
end
`

// A failing expectation prints what differs, by path, and exits 1; -run picks cases; -json
// prints one object per case; a Lua error is matched by kind and line; an event no trigger
// takes fails with -c; a bad test file is refused with file, line and key (exit 2).
func TestMoongateTest(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("counter.lua", testedLua)
	write("counter_test.yaml", `kv: {n: 10}
cases:
  - name: publishes the next number
    events:
      - mqtt: {topic: in/a, payload: "x"}
      - mqtt: {topic: in/b, payload: "x"}
    expect:
      publishes:
        - {topic: out/11, payload: {n: 11, topic: in/a}}
        - {topic: out/12, payload: {n: 12}}
      kv: {n: 12}
      result: {n: 12}
      logs: ["published 11", "published 12"]
  - name: wrong on purpose
    events:
      - mqtt: {topic: in/a, payload: "x"}
    expect:
      publishes: [{topic: out/11, payload: {n: 99}}]
      kv: {n: 5, gone: null}
  - name: an error at its line
    events:
      - mqtt: {topic: in/a, payload: "boom"}
    expect:
      error: {kind: runtime, line: 3, message: "boom at 11"}
`)
	code, out, _ := moongate(t, "test", dir)
	if code != exitFailure {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{
		"FAIL " + filepath.Join(dir, "counter_test.yaml") + ": wrong on purpose",
		"publishes[0].payload.n: want 99, got 11",
		`kv["n"]: want 5, got 11`,
		"2 passed, 1 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if code, out, _ := moongate(t, "test", "-run", "line|next", dir); code != exitOK || !strings.Contains(out, "2 passed, 0 failed") {
		t.Errorf("-run: exit %d\n%s", code, out)
	}
	code, out, _ = moongate(t, "test", "-json", dir)
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("-json line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if code != exitFailure || len(lines) != 3 || lines[1]["ok"] != false || lines[1]["case"] != "wrong on purpose" {
		t.Errorf("-json: exit %d, %v", code, lines)
	}

	cfg := write("moongate.yaml", `functions:
  - name: counter
    source: counter.lua
    triggers: ["mqtt:in/a"]
`)
	code, out, errOut := moongate(t, "test", "-c", cfg, "-run", "next", dir)
	if code != exitFailure || !strings.Contains(out, "events[1]: no trigger of counter takes mqtt in/b (triggers: mqtt:in/a)") {
		t.Errorf("-c with an event no trigger takes: exit %d\n%s%s", code, out, errOut)
	}

	write("counter_test.yaml", "cases:\n  - name: x\n    evnts: []\n")
	code, _, errOut = moongate(t, "test", dir)
	if code != exitUsage || !strings.Contains(errOut, "counter_test.yaml:3: cases[0].evnts: unknown key") {
		t.Errorf("a bad test file: exit %d, %s", code, errOut)
	}
}

// --watch runs the tests again when a file changes, until interrupted.
func TestMoongateTestWatch(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "w.lua"), []byte(`function handle(e) return {n = 1} end`), 0o644)
	testFile := filepath.Join(dir, "w_test.yaml")
	os.WriteFile(testFile, []byte("cases:\n  - name: one\n    events: [{mqtt: {topic: a, payload: x}}]\n    expect: {result: {n: 1}}\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer // e2e_test.go
	done := make(chan int)
	go func() { done <- Main(ctx, []string{"test", "--watch", dir}, &out, &out) }()
	poll.Within(t, 10*time.Second, "the first run", func() bool { return strings.Contains(out.String(), "1 passed, 0 failed") })
	// The function changes: the run that follows fails.
	os.WriteFile(filepath.Join(dir, "w.lua"), []byte(`function handle(e) return {n = 2} end`), 0o644)
	poll.Within(t, 10*time.Second, "a run after the change", func() bool { return strings.Contains(out.String(), "result.n: want 1, got 2") })
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("--watch ended with %d:\n%s", code, out.String())
	}
}

// The function tests give the same result on the ARM binaries under qemu as on this
// machine, case by case (make smoke-arm runs it with MOONGATE_E2E_BIN and
// MOONGATE_E2E_EXEC; without them it compares this machine's binary with itself).
func TestExampleFunctionTestsSameEverywhere(t *testing.T) {
	t.Setenv("CLOUD_URL", "http://127.0.0.1:9/ingest")
	bin, exe := gatewayBinary(t), os.Getenv("MOONGATE_E2E_EXEC")
	strip := func(out string) string { // durations differ; nothing else may
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("-json line %q: %v", l, err)
			}
			delete(m, "duration_ns")
			b, _ := json.Marshal(m)
			lines = append(lines, string(b))
		}
		return strings.Join(lines, "\n")
	}
	for _, ex := range []string{"quickstart", "button-relay", "weather-station", "lan-devices"} {
		dir := filepath.Join("..", "..", "examples", ex)
		args := []string{"test", "-json", "-c", filepath.Join(dir, "moongate.yaml"), dir}
		_, here, _ := moongate(t, args...)
		argv := append([]string{bin}, args...)
		if exe != "" {
			argv = append([]string{exe}, argv...)
		}
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
		if strip(string(out)) != strip(here) {
			t.Errorf("%s: %s gives\n%s\nand this machine\n%s", ex, bin, out, here)
		}
	}
}
