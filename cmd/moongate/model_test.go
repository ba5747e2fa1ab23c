package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
)

var (
	modelSeed  = flag.Uint64("seed", 0, "TestModelDeploys, TestPowerLoss: the seed of the random steps (0: from the clock)")
	modelSteps = flag.Int("steps", 200, "TestModelDeploys: how many random steps")
)

// TestModelDeploys drives the real binary through a long random sequence of what users do
// to functions — config edits (add, change, remove, a broken entry), deploys through the
// API (new, redeploy, refused), rollbacks, deletes with and without purge, clean and kill -9
// restarts — and after every step compares the gateway with a model of what must be
// there: the functions the API lists and their versions, each function's version history
// (numbers and source digests), which functions answer on MQTT and with which code, and
// each function's KV. A failure names the seed and the step; replay it with
// `go test ./cmd/moongate -run TestModelDeploys -seed N`, and run longer with -steps.
func TestModelDeploys(t *testing.T) {
	seed := *modelSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: go test ./cmd/moongate -run TestModelDeploys -seed %d)", seed, seed)
	w := newModelWorld(t, rand.New(rand.NewPCG(seed, seed>>1|1)))
	w.start()
	w.check("start")
	for step := 1; step <= *modelSteps; step++ {
		what := w.randomStep()
		w.check(fmt.Sprintf("step %d (%s), seed %d", step, what, seed))
	}
	w.stopGateway()
	t.Logf("%d steps: %d clean restarts, %d kill -9, %d refused configs, %d deploys, %d deletes",
		*modelSteps, w.counts["restart"], w.counts["kill9"], w.counts["broken"], w.counts["deploy"], w.counts["delete"])
}

// The names the steps pick from: config slots, and names only the API deploys. The API
// also deploys over config slots.
var (
	configSlots = []string{"cfg-a", "cfg-b", "cfg-c"}
	apiNames    = []string{"api-a", "api-b"}
	allNames    = append(slices.Clone(configSlots), apiNames...)
)

// modelVersion is one stored version as the model knows it.
type modelVersion struct {
	number     int
	source     string
	fromConfig bool   // deployed from moongate.yaml
	tag        string // what the version answers on MQTT
}

// modelFn is everything the model knows of one name.
type modelFn struct {
	history []modelVersion
	active  int // version number, 0 when not active
	probes  int // the KV counter each probe increments
}

func (f *modelFn) version(n int) *modelVersion {
	for i := range f.history {
		if f.history[i].number == n {
			return &f.history[i]
		}
	}
	return nil
}

func (f *modelFn) deploy(source, tag string, fromConfig bool) {
	f.history = append(f.history, modelVersion{number: len(f.history) + 1, source: source, fromConfig: fromConfig, tag: tag})
	f.active = len(f.history)
}

// modelWorld is the gateway under test and the model beside it.
type modelWorld struct {
	t   *testing.T
	rng *rand.Rand

	dir, cfg          string
	apiPort, mqttPort int
	gw                *child
	client            paho.Client
	replies           chan [2]string

	fns     map[string]*modelFn
	config  map[string]string // slot -> source in moongate.yaml now
	applied map[string]string // slot -> source applied at the last start
	nextTag int
	counts  map[string]int
}

func newModelWorld(t *testing.T, rng *rand.Rand) *modelWorld {
	w := &modelWorld{t: t, rng: rng, dir: t.TempDir(), apiPort: loopback.FreePort(t), mqttPort: loopback.FreePort(t),
		fns: map[string]*modelFn{}, config: map[string]string{}, applied: map[string]string{}, counts: map[string]int{}}
	for _, n := range allNames {
		w.fns[n] = &modelFn{}
	}
	w.cfg = filepath.Join(w.dir, "moongate.yaml")
	w.config["cfg-a"] = w.source("cfg-a")
	w.config["cfg-b"] = w.source("cfg-b")
	w.writeConfig()
	return w
}

// source is a new version's code: it counts probes in KV and answers with its tag.
func (w *modelWorld) source(name string) string {
	w.nextTag++
	return fmt.Sprintf(`-- %s tag %d
function handle(e)
  kv.incr("probes")
  mqtt.publish("reply/%s", %q)
end
`, name, w.nextTag, name, tagOf(name, w.nextTag))
}

func tagOf(name string, n int) string { return fmt.Sprintf("%s#%d", name, n) }

// tagIn reads the tag back from a source.
func tagIn(source string) string {
	var name string
	var n int
	if _, err := fmt.Sscanf(source, "-- %s tag %d", &name, &n); err != nil {
		return ""
	}
	return tagOf(name, n)
}

func (w *modelWorld) writeConfig() {
	w.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "gateway:\n  id: model\n  data_dir: ./data\n  version_history: %d\n  console: {listen: 127.0.0.1:%d}\nmqtt:\n  broker: embedded\n  embedded: {listen: 127.0.0.1:%d}\nfunctions:", modelHistory, w.apiPort, w.mqttPort)
	slots := 0
	for _, slot := range configSlots {
		src, ok := w.config[slot]
		if !ok {
			continue
		}
		slots++
		file := slot + ".lua"
		if err := os.WriteFile(filepath.Join(w.dir, file), []byte(src), 0o644); err != nil {
			w.t.Fatal(err)
		}
		fmt.Fprintf(&b, "\n  - {name: %s, source: %s, triggers: [\"mqtt:probe/%s@1\"]}", slot, file, slot)
	}
	if slots == 0 {
		b.WriteString(" []")
	}
	b.WriteString("\n")
	if err := os.WriteFile(w.cfg, []byte(b.String()), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// start runs the gateway and applies the start rules to the model (README, "Functions
// across restarts").
func (w *modelWorld) start() {
	w.t.Helper()
	w.gw = startGateway(w.t, w.dir, w.cfg, w.apiPort)
	for _, slot := range configSlots {
		src, inConfig := w.config[slot]
		f := w.fns[slot]
		if !inConfig {
			if v := f.version(f.active); v != nil && v.fromConfig {
				f.active = 0 // removed from the config
			}
			continue
		}
		if w.applied[slot] != src {
			f.deploy(src, tagIn(src), true)
		}
	}
	w.applied = map[string]string{}
	for slot, src := range w.config {
		w.applied[slot] = src
	}
	w.connect()
}

func (w *modelWorld) connect() {
	w.t.Helper()
	w.replies = make(chan [2]string, 100)
	replies := w.replies
	opts := paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", w.mqttPort)).
		SetClientID("model-prober").SetCleanSession(true).SetAutoReconnect(false)
	w.client = paho.NewClient(opts)
	if tok := w.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		w.t.Fatalf("connect: %v", tok.Error())
	}
	if tok := w.client.Subscribe("reply/#", 1, func(_ paho.Client, m paho.Message) {
		replies <- [2]string{strings.TrimPrefix(m.Topic(), "reply/"), string(m.Payload())}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		w.t.Fatalf("subscribe: %v", tok.Error())
	}
}

func (w *modelWorld) stopGateway() {
	w.t.Helper()
	w.client.Disconnect(50)
	w.gw.stop(w.t)
}

// randomStep does one thing a user does, picked at random, and says what.
func (w *modelWorld) randomStep() string {
	for {
		switch r := w.rng.IntN(100); {
		case r < 8:
			return w.configAdd()
		case r < 16:
			return w.configChange()
		case r < 21:
			return w.configRemove()
		case r < 25:
			return w.configBroken()
		case r < 45:
			return w.apiDeploy()
		case r < 52:
			return w.apiRefused()
		case r < 62:
			if s := w.rollback(); s != "" {
				return s
			}
		case r < 72:
			if s := w.remove(); s != "" {
				return s
			}
		case r < 86:
			w.counts["restart"]++
			w.stopGateway()
			w.start()
			return "clean restart"
		default:
			w.counts["kill9"]++
			w.client.Disconnect(0)
			if err := w.gw.cmd.Process.Kill(); err != nil {
				w.t.Fatal(err)
			}
			<-w.gw.exited
			w.start()
			return "kill -9 and restart"
		}
	}
}

func (w *modelWorld) pick(names []string, ok func(string) bool) (string, bool) {
	var c []string
	for _, n := range names {
		if ok(n) {
			c = append(c, n)
		}
	}
	if len(c) == 0 {
		return "", false
	}
	return c[w.rng.IntN(len(c))], true
}

// Config edits take effect at the next start.

func (w *modelWorld) configAdd() string {
	slot, ok := w.pick(configSlots, func(s string) bool { _, in := w.config[s]; return !in })
	if !ok {
		return w.configChange()
	}
	w.config[slot] = w.source(slot)
	w.writeConfig()
	return "config: add " + slot
}

func (w *modelWorld) configChange() string {
	slot, ok := w.pick(configSlots, func(s string) bool { _, in := w.config[s]; return in })
	if !ok {
		return w.configAdd()
	}
	w.config[slot] = w.source(slot)
	w.writeConfig()
	return "config: change " + slot
}

func (w *modelWorld) configRemove() string {
	slot, ok := w.pick(configSlots, func(s string) bool { _, in := w.config[s]; return in })
	if !ok {
		return w.configAdd()
	}
	delete(w.config, slot)
	w.writeConfig()
	return "config: remove " + slot
}

// configBroken restarts on a config with an entry that does not compile: refused, twice,
// with nothing changed; then the entry is fixed and the gateway starts.
func (w *modelWorld) configBroken() string {
	w.counts["broken"]++
	slot := configSlots[w.rng.IntN(len(configSlots))]
	good, had := w.config[slot]
	w.stopGateway()
	w.config[slot] = "function handle(e) return 1 + end\n"
	w.writeConfig()
	for try := 1; try <= 2; try++ {
		code, out := runRefused(w.t, w.dir, w.cfg)
		if code != 2 || !strings.Contains(out, slot+".lua:1") {
			w.t.Fatalf("broken %s, start %d: exit %d, want 2 naming %s.lua:1:\n%s", slot, try, code, slot, out)
		}
	}
	if had {
		w.config[slot] = good
	} else {
		delete(w.config, slot)
	}
	w.writeConfig()
	w.start()
	return "config: broken " + slot + ", refused twice, fixed"
}

// runRefused runs a gateway that must refuse to start, and returns its exit code and output.
func runRefused(t *testing.T, dir, cfg string) (int, string) {
	t.Helper()
	cmd := exec.Command(gatewayBinary(t), "run", "-c", cfg)
	cmd.Dir = dir
	done := make(chan struct{})
	time.AfterFunc(30*time.Second, func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
		}
	})
	out, err := cmd.CombinedOutput()
	close(done)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("a gateway on a broken config did not fail: %v\n%s", err, out)
	}
	return ee.ExitCode(), string(out)
}

func (w *modelWorld) apiDeploy() string {
	w.counts["deploy"]++
	name := allNames[w.rng.IntN(len(allNames))]
	f := w.fns[name]
	src := w.source(name)
	status, raw := w.api("PUT", "/api/v1/functions/"+name, map[string]any{"source": src, "triggers": []string{"mqtt:probe/" + name + "@1"}})
	want := http.StatusCreated
	if f.active != 0 {
		want = http.StatusOK
	}
	if status != want {
		w.t.Fatalf("deploy %s: %d %s, want %d", name, status, raw, want)
	}
	f.deploy(src, tagIn(src), false)
	return "api: deploy " + name
}

func (w *modelWorld) apiRefused() string {
	name := allNames[w.rng.IntN(len(allNames))]
	status, raw := w.api("PUT", "/api/v1/functions/"+name, map[string]any{"source": "function handle(e)\n  return (\nend\n", "triggers": []string{"mqtt:probe/" + name + "@1"}})
	if status != http.StatusBadRequest || !strings.Contains(raw, `"line":`) {
		w.t.Fatalf("refused deploy of %s: %d %s", name, status, raw)
	}
	return "api: refused deploy of " + name
}

func (w *modelWorld) rollback() string {
	name, ok := w.pick(allNames, func(n string) bool { return w.fns[n].active != 0 })
	if !ok {
		return ""
	}
	f := w.fns[name]
	status, raw := w.api("POST", "/api/v1/functions/"+name+"/rollback", map[string]any{})
	if f.active == 1 {
		if status != http.StatusConflict {
			w.t.Fatalf("rollback of %s at version 1: %d %s, want 409", name, status, raw)
		}
		return "api: rollback of " + name + " refused at version 1"
	}
	if status != http.StatusOK {
		w.t.Fatalf("rollback %s: %d %s", name, status, raw)
	}
	prev := f.version(f.active - 1)
	f.deploy(prev.source, prev.tag, false)
	return fmt.Sprintf("api: rollback %s to %d", name, prev.number)
}

func (w *modelWorld) remove() string {
	name, ok := w.pick(allNames, func(n string) bool { return w.fns[n].active != 0 })
	if !ok {
		return ""
	}
	w.counts["delete"]++
	purge := w.rng.IntN(2) == 0
	path := "/api/v1/functions/" + name
	if purge {
		path += "?purge=1"
	}
	if status, raw := w.api("DELETE", path, nil); status != http.StatusNoContent {
		w.t.Fatalf("delete %s: %d %s", name, status, raw)
	}
	f := w.fns[name]
	f.active = 0
	if purge {
		f.probes = 0
		return "api: delete " + name + " and purge"
	}
	return "api: delete " + name
}

func (w *modelWorld) api(method, path string, body any) (int, string) {
	w.t.Helper()
	var rd *strings.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	} else {
		rd = strings.NewReader("")
	}
	req, _ := http.NewRequest(method, w.gw.api+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = io.Copy(&b, resp.Body)
	return resp.StatusCode, b.String()
}

// check compares the gateway with the model: the list, every history, the answers on
// MQTT and the KV.
func (w *modelWorld) check(when string) {
	w.t.Helper()
	fail := func(format string, args ...any) {
		w.t.Helper()
		w.t.Fatalf("after %s: %s", when, fmt.Sprintf(format, args...))
	}
	var list struct {
		Functions []struct {
			Name    string `json:"name"`
			Version int    `json:"version"`
		} `json:"functions"`
	}
	status, raw := w.api("GET", "/api/v1/functions", nil)
	if status != http.StatusOK || json.Unmarshal([]byte(raw), &list) != nil {
		fail("list: %d %s", status, raw)
	}
	got, want := map[string]int{}, map[string]int{}
	for _, f := range list.Functions {
		got[f.Name] = f.Version
	}
	for _, n := range allNames {
		if a := w.fns[n].active; a != 0 {
			want[n] = a
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		fail("the API lists %v, the model %v", got, want)
	}
	for _, n := range allNames {
		w.checkHistory(n, fail)
	}
	w.probe(fail)
}

// modelHistory is the model gateway's version_history, small so that the random steps
// prune it; checkHistory reads it in pages of modelPage.
const (
	modelHistory = 6
	modelPage    = 4
)

func (w *modelWorld) checkHistory(name string, fail func(string, ...any)) {
	w.t.Helper()
	f := w.fns[name]
	type versionDoc struct {
		Version int    `json:"version"`
		SHA256  string `json:"sha256"`
	}
	var versions []versionDoc
	for before := 0; ; {
		path := fmt.Sprintf("/api/v1/functions/%s?history_limit=%d", name, modelPage)
		if before > 0 {
			path += fmt.Sprintf("&history_before=%d", before)
		}
		status, raw := w.api("GET", path, nil)
		if f.active == 0 {
			if status != http.StatusNotFound {
				fail("GET %s, not active: %d %s", name, status, raw)
			}
			return
		}
		var doc struct {
			Versions []versionDoc `json:"versions"`
			More     bool         `json:"versions_more"`
		}
		if status != http.StatusOK || json.Unmarshal([]byte(raw), &doc) != nil {
			fail("GET %s: %d %s", name, status, raw)
		}
		versions = append(versions, doc.Versions...)
		if !doc.More || len(doc.Versions) == 0 {
			break
		}
		before = doc.Versions[len(doc.Versions)-1].Version
	}
	if want := min(len(f.history), modelHistory); len(versions) != want {
		fail("%s has %d versions, the model %d (of %d, version_history %d)", name, len(versions), want, len(f.history), modelHistory)
	}
	for i, v := range versions { // newest first
		m := f.history[len(f.history)-1-i]
		sum := sha256.Sum256([]byte(m.source))
		if v.Version != m.number || v.SHA256 != hex.EncodeToString(sum[:]) {
			fail("%s version %d (sha %.12s) is not the model's %d (%s)", name, v.Version, v.SHA256, m.number, m.tag)
		}
	}
}

// probe publishes to every name's trigger topic: each active function must answer once,
// with its active version's tag, count the probe in its KV, and nothing else may answer.
func (w *modelWorld) probe(fail func(string, ...any)) {
	w.t.Helper()
	expect := map[string]string{}
	for _, n := range allNames {
		if f := w.fns[n]; f.active != 0 {
			expect[n] = f.version(f.active).tag
			f.probes++
		}
	}
	var wg sync.WaitGroup
	for _, n := range allNames {
		wg.Add(1)
		tok := w.client.Publish("probe/"+n, 1, false, "probe")
		go func() {
			defer wg.Done()
			tok.WaitTimeout(10 * time.Second)
		}()
	}
	wg.Wait()
	got := map[string]string{}
	timeout := time.After(10 * time.Second)
	for len(got) < len(expect) {
		select {
		case r := <-w.replies:
			if prev, dup := got[r[0]]; dup {
				fail("%s answered twice (%s, %s)", r[0], prev, r[1])
			}
			got[r[0]] = r[1]
		case <-timeout:
			fail("answers %v, want %v", got, expect)
		}
	}
	select {
	case r := <-w.replies:
		fail("%s answered %s, beyond %v", r[0], r[1], expect)
	case <-time.After(30 * time.Millisecond):
	}
	if fmt.Sprint(got) != fmt.Sprint(expect) {
		fail("answers %v, want %v", got, expect)
	}
	for n := range expect {
		status, raw := w.api("GET", "/api/v1/functions/"+n+"/kv?prefix=probes", nil)
		var kv struct {
			Items []struct {
				Value int `json:"value"`
			} `json:"items"`
		}
		if status != http.StatusOK || json.Unmarshal([]byte(raw), &kv) != nil || len(kv.Items) != 1 || kv.Items[0].Value != w.fns[n].probes {
			fail("%s's KV: %d %s, want probes = %d", n, status, raw, w.fns[n].probes)
		}
	}
}
