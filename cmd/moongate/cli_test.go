package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cli runs one client command against the gateway at api, as a user types it.
func cli(t *testing.T, api string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{args[0], "--api", api}, args[1:]...)
	code = Main(context.Background(), full, &out, &errb)
	return code, out.String(), errb.String()
}

// The client commands refuse names the gateway would refuse, escape every path segment
// they build, and delete with and without purge.
func TestCLINamesAndDelete(t *testing.T) {
	dir := t.TempDir()
	apiPort := freePort(t)
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway: {id: cli, data_dir: ./data, console: {listen: 127.0.0.1:%d}}
mqtt: {broker: embedded, embedded: {listen: 127.0.0.1:%d}}
`, apiPort, freePort(t)), nil)
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
