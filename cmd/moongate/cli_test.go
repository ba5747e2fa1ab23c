package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moongate/moongate/internal/loopback"
)

// cli runs one client command of Main against api and returns its exit code and output.
func cli(t *testing.T, api string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args = append([]string{args[0], "--api", api}, args[1:]...)
	code := Main(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// outboxPending reads the outbox depth from /api/v1/sync.
func outboxPending(t *testing.T, api string) float64 {
	t.Helper()
	resp, err := http.Get(api + "/api/v1/sync")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Outbox struct {
			Pending float64 `json:"pending"`
		} `json:"outbox"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc.Outbox.Pending
}

// `moongate invoke --dry-run` prints what the function would do and the gateway does none
// of it; without --dry-run the same list is printed as what it did.
func TestCLIInvokeDryRun(t *testing.T) {
	apiPort := loopback.FreePort(t)
	dir, cfg := writeQuickstart(t, "embedded", loopback.FreePort(t), apiPort)
	c := startGateway(t, dir, cfg, apiPort)
	hot := `{"topic":"sensors/a/temp","payload":{"temp":31}}`

	code, out, errOut := cli(t, c.api, "invoke", "temp-alert", "--event", hot, "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	for _, want := range []string{"dry run: nothing was applied", "would kv set readings/a = 1",
		`would emit alerts {"device":"a"`, `would publish alerts/a qos 1 retain false {"device":"a"`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if n := outboxPending(t, c.api); n != 0 {
		t.Errorf("the dry run left %v records in the outbox", n)
	}
	code, out, errOut = cli(t, c.api, "invoke", "temp-alert", "--event", hot)
	if code != 0 || !strings.Contains(out, "\nkv set readings/a = 1\n") || strings.Contains(out, "would") {
		t.Errorf("invoke: exit %d:\n%s%s", code, out, errOut)
	}
	if n := outboxPending(t, c.api); n != 1 {
		t.Errorf("the invoke left %v records in the outbox, want 1", n)
	}
}

// A deploy of a new function without --trigger is a usage error that says what to do;
// --trigger none deploys it for invoke only; a redeploy without --trigger keeps the
// function's triggers.
func TestCLIDeployTriggers(t *testing.T) {
	apiPort := loopback.FreePort(t)
	dir, cfg := writeQuickstart(t, "embedded", loopback.FreePort(t), apiPort)
	c := startGateway(t, dir, cfg, apiPort)
	src := filepath.Join(dir, "functions", "temp_alert.lua")

	code, _, errOut := cli(t, c.api, "deploy", "newone", src)
	if code != exitUsage || !strings.Contains(errOut, "a new function needs at least one --trigger; use --trigger none to deploy it for invoke only") {
		t.Errorf("new without --trigger: exit %d: %s", code, errOut)
	}
	code, out, errOut := cli(t, c.api, "deploy", "newone", src, "--trigger", "none")
	if code != 0 || out != "deployed newone version 1 (no triggers: invoke only)\n" {
		t.Errorf("--trigger none: exit %d: %s%s", code, out, errOut)
	}
	if code, _, errOut = cli(t, c.api, "deploy", "newone", src, "--trigger", "none", "--trigger", "mqtt:a"); code != exitUsage {
		t.Errorf("none with another trigger: exit %d: %s", code, errOut)
	}
	code, out, errOut = cli(t, c.api, "deploy", "temp-alert", src)
	if code != 0 || out != "deployed temp-alert version 2 (mqtt:sensors/+/temp@1)\n" {
		t.Errorf("redeploy without --trigger: exit %d: %s%s", code, out, errOut)
	}
}

// Without a config, run says where the data dir is, as an absolute path, before it
// creates it; here it cannot (a file is in the way), so it stops right after.
func TestRunWithoutConfigNamesDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "moongate-data"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gatewayBinary(t), "run")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("run started with a file as its data dir:\n%s", out)
	}
	if want := "data_dir=" + filepath.Join(dir, "moongate-data"); !strings.Contains(string(out), "no config file") || !strings.Contains(string(out), want) {
		t.Errorf("no %q in:\n%s", want, out)
	}
}

// The client commands refuse names the gateway would refuse, escape every path segment
// they build, and delete with and without purge.
func TestCLINamesAndDelete(t *testing.T) {
	dir := t.TempDir()
	apiPort := loopback.FreePort(t)
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway: {id: cli, data_dir: ./data, console: {listen: 127.0.0.1:%d}}
mqtt: {broker: embedded, embedded: {listen: 127.0.0.1:%d}}
`, apiPort, loopback.FreePort(t)), nil)
	gw := startGateway(t, dir, cfg, apiPort)
	defer gw.stop(t)
	fn := filepath.Join(dir, "counter.lua")
	if err := os.WriteFile(fn, []byte(`function handle(e) return kv.incr("n") end`), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, bad := range []string{"../x", "a b", "Bad Name/..", "UPPER", strings.Repeat("x", 64)} {
		code, _, stderr := cli(t, gw.api, "deploy", bad, fn, "--trigger", "mqtt:x")
		if code != exitUsage || !strings.Contains(stderr, "not a valid function name") {
			t.Errorf("deploy %q: exit %d, %q", bad, code, stderr)
		}
	}
	if code, _, stderr := cli(t, gw.api, "invoke", "x/../y"); code != exitFailure || !strings.Contains(stderr, `no function "x/../y"`) {
		t.Errorf("invoke of a name with slashes reaches another endpoint: exit %d, %q", code, stderr)
	}

	if code, out, stderr := cli(t, gw.api, "deploy", "counter", fn, "--trigger", "mqtt:count/#"); code != 0 {
		t.Fatalf("deploy: exit %d %s %s", code, out, stderr)
	}
	if code, out, stderr := cli(t, gw.api, "invoke", "counter"); code != 0 || !strings.Contains(out, "result 1") {
		t.Fatalf("invoke: exit %d %s %s", code, out, stderr)
	}
	if code, out, stderr := cli(t, gw.api, "delete", "counter"); code != 0 || !strings.Contains(out, "deleted counter (its KV stays") {
		t.Fatalf("delete: exit %d %s %s", code, out, stderr)
	}
	if code, _, stderr := cli(t, gw.api, "delete", "counter"); code != exitFailure || !strings.Contains(stderr, `no function "counter"`) {
		t.Fatalf("delete again: exit %d %q", code, stderr)
	}
	// Deployed again, it goes on numbering and finds its KV; deleted with --purge, both go.
	if code, out, _ := cli(t, gw.api, "deploy", "counter", fn, "--trigger", "mqtt:count/#"); code != 0 || !strings.Contains(out, "version 2") {
		t.Fatalf("deploy after delete: exit %d %s", code, out)
	}
	if code, out, _ := cli(t, gw.api, "invoke", "counter"); code != 0 || !strings.Contains(out, "result 2") {
		t.Fatalf("the KV stayed across the delete: exit %d %s", code, out)
	}
	if code, out, stderr := cli(t, gw.api, "delete", "counter", "--purge"); code != 0 || !strings.Contains(out, "and its KV") {
		t.Fatalf("delete --purge: exit %d %s %s", code, out, stderr)
	}
	if code, out, _ := cli(t, gw.api, "deploy", "counter", fn, "--trigger", "mqtt:count/#"); code != 0 || !strings.Contains(out, "version 3") {
		t.Fatalf("deploy after purge: exit %d %s", code, out)
	}
	if code, out, _ := cli(t, gw.api, "invoke", "counter"); code != 0 || !strings.Contains(out, "result 1") {
		t.Fatalf("the purge deleted the KV: exit %d %s", code, out)
	}
}
