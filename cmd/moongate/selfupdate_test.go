package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moongate/moongate/gateway"
	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

// The self-update tests run a copy of the real binary from a directory of its own (a
// self-update rewrites it), started by hand: no systemd, the case where nothing but the
// gateway itself can put the previous binary back.

// v2Once is moongate built with another version string, to tell that the new binary runs.
var v2Once = builtBinary{flags: []string{"-ldflags", "-X main.version=selfupdate-v2"}}

const selfUpdateCounter = `function handle(event)
  return {n = kv.incr("n", 1)}
end
`

type selfUpdateBench struct {
	t             *testing.T
	dir, exe, cfg string
	apiPort       int
	env           []string // added to the gateway's environment
	api           string
	gw            *child
	original      []byte // the binary the gateway was started from
}

func newSelfUpdateBench(t *testing.T, env ...string) *selfUpdateBench {
	dir := t.TempDir()
	b := &selfUpdateBench{t: t, dir: dir, exe: filepath.Join(dir, "bin", "moongate"), env: env}
	var err error
	if b.original, err = os.ReadFile(gatewayBinary(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(b.exe), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.exe, b.original, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"fw", "rogue"} {
		if code, out := fwCLI("keygen", filepath.Join(dir, k)); code != 0 {
			t.Fatalf("keygen: %s", out)
		}
	}
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway:
  id: selfupdate
  data_dir: ./data
  console: {listen: 127.0.0.1:%d}
mqtt:
  embedded: {listen: 127.0.0.1:%d}
firmware:
  keys: [fw.pub]
`, apiPort, mqttPort), map[string]string{"counter.lua": selfUpdateCounter})
	b.cfg, b.apiPort = cfg, apiPort
	b.start()
	if code, _, errOut := cli(t, b.api, "deploy", "counter", filepath.Join(dir, "counter.lua"), "--trigger", "none"); code != 0 {
		t.Fatalf("deploy: %s", errOut)
	}
	if code, _, errOut := cli(t, b.api, "invoke", "counter", "--event", "{}"); code != 0 {
		t.Fatalf("invoke: %s", errOut)
	}
	return b
}

// start runs the gateway from the bench's binary and waits until its API answers.
func (b *selfUpdateBench) start() {
	b.t.Helper()
	b.gw = launchBinary(b.t, b.exe, b.dir, b.cfg, b.apiPort, b.env)
	b.gw.waitAPI(b.t)
	b.api = b.gw.api
}

// sign writes data to a new file, name, and signs it as a gateway binary of typ with key
// and `firmware sign`'s extra flags.
func (b *selfUpdateBench) sign(name string, data []byte, key, typ string, counter int, extra ...string) (image, manifest string) {
	b.t.Helper()
	image = filepath.Join(b.dir, name)
	if err := os.WriteFile(image, data, 0o755); err != nil {
		b.t.Fatal(err)
	}
	args := append([]string{"sign", filepath.Join(b.dir, key+".key"), image, typ, fmt.Sprintf("2.0.%d", counter),
		"--counter", fmt.Sprint(counter), "--expires", "24h"}, extra...)
	if code, out := fwCLI(args...); code != 0 {
		b.t.Fatalf("sign %s: %d %s", image, code, out)
	}
	return image, image + ".manifest.json"
}

// script is a shell script: a binary the kernel runs.
func script(body string) []byte { return []byte("#!/bin/sh\n" + body + "\n") }

func (b *selfUpdateBench) update(image, manifest string) (int, string) {
	b.t.Helper()
	code, out, errOut := cli(b.t, b.api, "self-update", image, manifest)
	return code, out + errOut
}

// runs checks which binary serves, by the version it reports, and that the process is
// the one the test started (an update or a rollback keeps it).
func (b *selfUpdateBench) runs(version string) {
	b.t.Helper()
	select {
	case err := <-b.gw.exited:
		b.t.Fatalf("the gateway process exited: %v", err)
	default:
	}
	if got := b.version(); got != version {
		b.t.Errorf("the gateway reports version %q, want %q", got, version)
	}
}

// version is the version the running gateway reports: "dev" for a test build, the
// commit for the release builds the ARM runs take (make smoke-arm).
func (b *selfUpdateBench) version() string {
	b.t.Helper()
	var st struct {
		Version string `json:"version"`
	}
	getJSON(b.t, b.api+"/api/v1/status", &st)
	return st.Version
}

// binaries checks the bench's bin directory: exactly the named files, with these bytes.
func (b *selfUpdateBench) binaries(want map[string][]byte) {
	b.t.Helper()
	entries, err := os.ReadDir(filepath.Dir(b.exe))
	if err != nil {
		b.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != len(want) {
		b.t.Errorf("bin holds %v, want %d files", names, len(want))
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(filepath.Dir(b.exe), name))
		if err != nil || !bytes.Equal(got, data) {
			b.t.Errorf("bin/%s: %d bytes (%v), not the %d bytes expected", name, len(got), err, len(data))
		}
	}
}

// kept checks that the counter function's KV, written before the update, is still there.
func (b *selfUpdateBench) kept() {
	b.t.Helper()
	var kv struct {
		Items []struct {
			Key   string          `json:"key"`
			Value json.RawMessage `json:"value"`
		} `json:"items"`
	}
	getJSON(b.t, b.api+"/api/v1/functions/counter/kv", &kv)
	if len(kv.Items) != 1 || kv.Items[0].Key != "n" || string(kv.Items[0].Value) != "1" {
		b.t.Errorf("counter's KV = %+v, want n = 1", kv.Items)
	}
}

func (b *selfUpdateBench) state() gateway.SelfUpdateState {
	b.t.Helper()
	var s gateway.SelfUpdateState
	getJSON(b.t, b.api+"/api/v1/self-update", &s)
	return s
}

// typ is the manifest type of the gateway's binary, which may be another architecture's
// than the test's (MOONGATE_E2E_BIN).
func (b *selfUpdateBench) typ() string {
	b.t.Helper()
	var doc struct {
		Type string `json:"type"`
	}
	getJSON(b.t, b.api+"/api/v1/self-update", &doc)
	return doc.Type
}

// v2 is the image of a newer moongate for the gateway's type: moongate built with another
// version string, or under MOONGATE_E2E_EXEC a script that runs that build for the
// gateway's architecture under the wrapper, as the tests run the first binary: the host
// kernel runs an ARM binary only with binfmt_misc registered for it.
func (b *selfUpdateBench) v2(typ string) []byte {
	b.t.Helper()
	wrap := os.Getenv("MOONGATE_E2E_EXEC")
	if wrap != "" {
		arch := strings.TrimPrefix(typ, "moongate-linux-")
		v2Once.env = []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + arch}
		if v, ok := strings.CutPrefix(arch, "armv"); ok {
			v2Once.env = []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm", "GOARM=" + v}
		}
	}
	path := v2Once.build(b.t, ".", "moongate")
	if wrap != "" {
		return script(fmt.Sprintf("exec %s %s \"$@\"", wrap, path))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		b.t.Fatal(err)
	}
	return data
}

func TestSelfUpdate(t *testing.T) {
	b := newSelfUpdateBench(t)
	typ := b.typ()
	v2 := b.v2(typ)
	if want := os.Getenv("MOONGATE_E2E_TYPE"); want != "" && typ != want {
		t.Errorf("the gateway's type is %q, want %q", typ, want)
	}
	unchanged := map[string][]byte{"moongate": b.original}
	first := b.version()

	t.Run("refused", func(t *testing.T) {
		for _, c := range []struct{ name, key, typ, want string }{
			{"unknown-key", "rogue", typ, "signature does not verify"},
			{"other-arch", "fw", "moongate-linux-mips", "this gateway runs " + typ},
		} {
			code, out := b.update(b.sign(c.name, v2, c.key, c.typ, 1))
			if code != exitFailure || !strings.Contains(out, c.want) {
				t.Errorf("%s: exit %d, %q; want 1 and %q", c.name, code, out, c.want)
			}
		}
		// A manifest of the right key and type over other bytes: the image is refused
		// once it has arrived, and what was written of it removed.
		image, manifest := b.sign("tampered", v2, "fw", typ, 1)
		tampered := bytes.Clone(v2)
		tampered[len(tampered)/2] ^= 1
		if err := os.WriteFile(image, tampered, 0o755); err != nil {
			t.Fatal(err)
		}
		if code, out := b.update(image, manifest); code != exitFailure || !strings.Contains(out, "sha256 differs") {
			t.Errorf("tampered: exit %d, %q; want 1 and the digest named", code, out)
		}
		b.binaries(unchanged)
		if s := b.state(); s.Counter != 0 || s.Last != nil {
			t.Errorf("state after refusals: %+v, want none", s)
		}
		b.runs(first)
	})

	t.Run("exits at start", func(t *testing.T) {
		code, out := b.update(b.sign("crash", script("echo 'new binary: cannot start' >&2; exit 1"), "fw", typ, 1))
		if code != exitFailure || !strings.Contains(out, "rolled back") || !strings.Contains(out, "exited before it was healthy: exit status 1") {
			t.Errorf("exit %d, %q; want a rollback because the new binary exited", code, out)
		}
		b.binaries(unchanged)
		b.runs(first)
		b.kept()
		if s := b.state(); s.Counter != 0 || s.Last == nil || s.Last.State != gateway.SelfUpdateRolledBack || s.Last.Counter != 1 {
			t.Errorf("state: %+v", s)
		}
	})

	t.Run("not healthy within the window", func(t *testing.T) {
		code, out := b.update(b.sign("hang", script("exec sleep 600"), "fw", typ, 2, "--health-window", "2s"))
		if code != exitFailure || !strings.Contains(out, "not healthy within 2s") {
			t.Errorf("exit %d, %q; want a rollback after the window", code, out)
		}
		b.binaries(unchanged)
		b.runs(first)
		b.kept()
	})

	t.Run("killed during the trial", func(t *testing.T) {
		pidFile := filepath.Join(b.dir, "trial.pid")
		image, manifest := b.sign("trial", script("echo $$ > "+pidFile+".tmp && mv "+pidFile+".tmp "+pidFile+"; exec sleep 600"), "fw", typ, 3)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int)
		go func() {
			done <- Main(ctx, []string{"self-update", "--api", b.api, image, manifest}, io.Discard, io.Discard)
		}()
		var pid int
		poll.Eventually(t, "the trial's child to start", func() bool {
			data, err := os.ReadFile(pidFile)
			_, err2 := fmt.Sscan(string(data), &pid)
			return err == nil && err2 == nil && pid > 1
		})
		if err := b.gw.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		syscall.Kill(pid, syscall.SIGKILL) // the orphaned trial, which holds the gateway's output
		<-b.gw.exited
		cancel()
		<-done
		b.start()
		b.binaries(unchanged)
		b.runs(first)
		b.kept()
		if s := b.state(); s.Counter != 0 || s.Last == nil || s.Last.State != gateway.SelfUpdateRolledBack ||
			s.Last.Reason != "the gateway stopped during the trial" {
			t.Errorf("state: %+v", s.Last)
		}
	})

	t.Run("good update", func(t *testing.T) {
		code, out := b.update(b.sign("moongate-v2", v2, "fw", typ, 4))
		if code != exitOK || !strings.Contains(out, "updated to 2.0.4 (counter 4)") {
			t.Fatalf("exit %d, %q; want the update installed", code, out)
		}
		b.binaries(map[string][]byte{"moongate": v2, "moongate.prev": b.original})
		b.runs("selfupdate-v2")
		b.kept()
		if s := b.state(); s.Counter != 4 || s.Version != "2.0.4" || s.Last.State != gateway.SelfUpdateOK {
			t.Errorf("state: %+v", s)
		}
	})

	t.Run("replay", func(t *testing.T) {
		image := filepath.Join(b.dir, "moongate-v2")
		code, out := b.update(image, image+".manifest.json") // counter 4, installed
		if code != exitFailure || !strings.Contains(out, "not above the installed binary's 4") {
			t.Errorf("exit %d, %q; want the replay refused", code, out)
		}
		b.runs("selfupdate-v2")
	})

	b.gw.stop(t)
	if t.Failed() {
		t.Logf("gateway output:\n%s", b.gw.out.String())
	}
}

// Under systemd (Type=notify, NotifyAccess=main, a watchdog) the gateway's process is the
// one systemd watches throughout: it pings the watchdog during a trial, never says
// STOPPING, and only the binary that serves after the trial says READY.
func TestSelfUpdateUnderSystemd(t *testing.T) {
	ns := listenNotify(t)
	b := newSelfUpdateBench(t, "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=1000000")
	typ := b.typ()
	v2 := b.v2(typ)
	poll.Eventually(t, "READY=1 from the first start", func() bool { return ns.count("READY=1") == 1 })

	// since returns the lines from n on, and their number.
	since := func(n int) ([]string, int) { l := ns.lines(); return l[n:], len(l) }
	_, mark := since(0)
	code, out := b.update(b.sign("hang", script("exec sleep 600"), "fw", typ, 1, "--health-window", "3s"))
	if code != exitFailure || !strings.Contains(out, "not healthy within 3s") {
		t.Fatalf("exit %d, %q; want a rollback after the window", code, out)
	}
	poll.Eventually(t, "READY=1 after the rollback", func() bool { return ns.count("READY=1") == 2 })
	lines, mark := since(mark)
	pings := 0
	for _, l := range lines {
		if l == "READY=1" {
			break
		}
		if l == "WATCHDOG=1" {
			pings++
		}
	}
	// The trial lasts 3 s and the watchdog wants a ping every 500 ms: the gateway's
	// own pings stopped when it stopped for the trial.
	if pings < 3 {
		t.Errorf("%d watchdog pings between the stop for the trial and the next READY, want the trial's: %q", pings, lines)
	}

	code, out = b.update(b.sign("moongate-v2", v2, "fw", typ, 2))
	if code != exitOK {
		t.Fatalf("exit %d, %q; want the update installed", code, out)
	}
	b.runs("selfupdate-v2")
	poll.Eventually(t, "READY=1 from the new binary", func() bool { return ns.count("READY=1") >= 3 })
	lines, _ = since(mark)
	if n := ns.count("READY=1"); n != 3 {
		t.Errorf("READY=1 sent %d times in all, want 3 (two starts and the new binary's, not its trial's): %q", n, lines)
	}
	if ns.count("STOPPING=1") != 0 {
		t.Errorf("STOPPING=1 sent before the gateway stopped: %q", ns.lines())
	}
	b.gw.stop(t)
	poll.Eventually(t, "STOPPING=1 on the final stop", func() bool { return ns.count("STOPPING=1") == 1 })
}
