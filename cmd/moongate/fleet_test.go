package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/fleet"
	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/mosquittotest"
	"github.com/moongate/moongate/internal/natstest"
	"github.com/moongate/moongate/internal/poll"
)

// fleetWatch keeps the latest report and online state of every gateway, as the cloud
// broker has them.
type fleetWatch struct {
	timeout time.Duration // how long waitRevision waits
	mu      sync.Mutex
	reports map[string]fleet.Report
	online  map[string]string
}

func watchFleet(t *testing.T, broker string) *fleetWatch {
	t.Helper()
	w := &fleetWatch{timeout: poll.DefaultTimeout, reports: map[string]fleet.Report{}, online: map[string]string{}}
	c := mqttClient(t, broker, "fleet-watch")
	tok := c.SubscribeMultiple(map[string]byte{fleet.AllReported: 1, fleet.AllOnline: 1}, func(_ paho.Client, m paho.Message) {
		id := fleet.GatewayOf(m.Topic())
		w.mu.Lock()
		defer w.mu.Unlock()
		if strings.HasSuffix(m.Topic(), "/online") {
			w.online[id] = string(m.Payload())
			return
		}
		var r fleet.Report
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			t.Errorf("report of %s: %v", id, err)
			return
		}
		w.reports[id] = r
	})
	if tok.Wait(); tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return w
}

func (w *fleetWatch) report(id string) fleet.Report {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reports[id]
}

// waitRevision waits until gateway id reports revision rev of group:lab applied and a
// last error that contains errPart ("" for none).
func (w *fleetWatch) waitRevision(t *testing.T, id string, rev uint64, errPart string) fleet.Report {
	t.Helper()
	var r fleet.Report
	poll.Within(t, w.timeout, fmt.Sprintf("%s to report group:lab@%d with error %q", id, rev, errPart), func() bool {
		r = w.report(id)
		if len(r.Layers) != 1 || r.Layers[0].Revision != rev {
			return false
		}
		if errPart == "" {
			return r.LastError == ""
		}
		return strings.Contains(r.LastError, errPart)
	})
	return r
}

// fleetGateway is a gateway process of the fleet test.
type fleetGateway struct {
	id, dir, cfg string
	apiPort      int
	c            *child
}

func newFleetGateway(t *testing.T, id, broker, pub string, failover ...string) *fleetGateway {
	t.Helper()
	g := &fleetGateway{id: id, dir: t.TempDir(), apiPort: loopback.FreePort(t)}
	if len(failover) > 0 {
		broker += "\n  failover_brokers: [" + strings.Join(failover, ", ") + "]"
	}
	g.cfg = writeGatewayFiles(t, g.dir, fmt.Sprintf(`gateway:
  id: %s
  data_dir: ./data
  console: {listen: 127.0.0.1:%d}
mqtt:
  embedded: {listen: 127.0.0.1:%d}
fleet:
  broker: %s
  groups: [lab]
  keys: [fleet.pub]
`, id, g.apiPort, loopback.FreePort(t), broker), map[string]string{"fleet.pub": pub})
	return g
}

func (g *fleetGateway) start(t *testing.T) { g.c = startGateway(t, g.dir, g.cfg, g.apiPort) }

// invoke runs a function through the API and returns its result as JSON text.
func (g *fleetGateway) invoke(t *testing.T, name, payload string) string {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/api/v1/functions/%s/invoke", g.apiPort, name),
		"application/json", strings.NewReader(`{"payload": `+payload+`}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("invoke %s on %s: %d %v", name, g.id, resp.StatusCode, err)
	}
	if out.Error != "" {
		t.Fatalf("invoke %s on %s: %s", name, g.id, out.Error)
	}
	return string(out.Result)
}

type fleetFunctionDoc struct {
	Name      string `json:"name"`
	Version   int    `json:"version"`
	ManagedBy string `json:"managed_by"`
	Revision  uint64 `json:"revision"`
}

func (g *fleetGateway) functions(t *testing.T) map[string]fleetFunctionDoc {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/functions", g.apiPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Functions []fleetFunctionDoc `json:"functions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	m := map[string]fleetFunctionDoc{}
	for _, f := range out.Functions {
		m[f.Name] = f
	}
	return m
}

// fleetCLI runs moongate fleet ... in-process and returns its standard output.
func fleetCLI(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), append([]string{"fleet"}, args...), &stdout, &stderr); code != exitOK {
		t.Fatalf("moongate fleet %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
	}
	return stdout.String()
}

// labDoc is revision rev of group:lab: double multiplies by factor, greet says hello in
// every good revision. A non-empty broken replaces double's source, and greet says hi: a
// revision that would change both.
func labDoc(rev uint64, factor int, broken string) fleet.Document {
	double := fleet.Function{Name: "double", Source: "function handle(e) return e.payload.x * tonumber(env.FACTOR) end",
		Triggers: []string{"mqtt:in/double"}, Env: map[string]string{"FACTOR": fmt.Sprint(factor)}}
	greet := fleet.Function{Name: "greet", Source: `function handle(e) return "hello " .. e.payload.name end`, Triggers: []string{"mqtt:in/greet"}}
	if broken != "" {
		double.Source = broken
		greet.Source = `function handle(e) return "hi " .. e.payload.name end`
	}
	return fleet.Document{Revision: rev, Target: "group:lab", Functions: []fleet.Function{double, greet}}
}

// signDoc signs doc with the key file through the CLI and returns the signed file.
func signDoc(t *testing.T, dir, key string, doc fleet.Document) string {
	t.Helper()
	b, _ := json.Marshal(doc)
	plain := filepath.Join(dir, fmt.Sprintf("rev%d-%s.json", doc.Revision, strings.TrimSuffix(filepath.Base(key), ".key")))
	if err := os.WriteFile(plain, b, 0o644); err != nil {
		t.Fatal(err)
	}
	signed := strings.TrimSuffix(plain, ".json") + ".signed.json"
	fleetCLI(t, "sign", key, plain, "-o", signed)
	return signed
}

// TestFleet: gateway processes against Mosquitto as the cloud broker take signed
// revisions of their group: all or nothing, never an older one, never one signed by
// another key, and a gateway away during a push converges when it comes back.
func TestFleet(t *testing.T) {
	cloud := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	keys := t.TempDir()
	fleetCLI(t, "keygen", filepath.Join(keys, "fleet"))
	fleetCLI(t, "keygen", filepath.Join(keys, "other"))
	key, other := filepath.Join(keys, "fleet.key"), filepath.Join(keys, "other.key")
	pub, err := os.ReadFile(filepath.Join(keys, "fleet.pub"))
	if err != nil {
		t.Fatal(err)
	}
	watch := watchFleet(t, cloud.URL)
	push := func(signed string) { fleetCLI(t, "push", "--broker", cloud.URL, signed) }

	a := newFleetGateway(t, "gw-a", cloud.URL, string(pub))
	b := newFleetGateway(t, "gw-b", cloud.URL, string(pub))
	a.start(t)
	b.start(t)

	// Revision 1: both gateways run both functions, marked as the fleet's.
	rev1 := signDoc(t, keys, key, labDoc(1, 2, ""))
	push(rev1)
	for _, g := range []*fleetGateway{a, b} {
		r := watch.waitRevision(t, g.id, 1, "")
		if len(r.Functions) != 2 || r.Functions[0].ManagedBy != "fleet" || r.Functions[0].SHA256 == "" || r.Health != "ok" {
			t.Fatalf("%s reported %+v", g.id, r)
		}
		if got := g.invoke(t, "double", `{"x": 21}`); got != "42" {
			t.Fatalf("%s: double(21) = %s", g.id, got)
		}
		if got := g.invoke(t, "greet", `{"name": "fleet"}`); got != `"hello fleet"` {
			t.Fatalf("%s: greet = %s", g.id, got)
		}
		if fs := g.functions(t); fs["double"].ManagedBy != "fleet" || fs["double"].Revision != 1 {
			t.Fatalf("%s: API shows %+v", g.id, fs["double"])
		}
	}

	// A local deploy over a fleet function is refused unless forced.
	src := filepath.Join(keys, "local.lua")
	if err := os.WriteFile(src, []byte("function handle(e) return 0 end"), 0o644); err != nil {
		t.Fatal(err)
	}
	api := fmt.Sprintf("http://127.0.0.1:%d", a.apiPort)
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{"deploy", "double", src, "--api", api}, &stdout, &stderr); code != exitFailure ||
		!strings.Contains(stderr.String(), "managed by the fleet") {
		t.Fatalf("deploy over a fleet function: exit %d, %s", code, stderr.String())
	}
	if code := Main(context.Background(), []string{"deploy", "double", src, "--force", "--api", api}, &stdout, &stderr); code != exitOK {
		t.Fatalf("forced deploy: exit %d, %s", code, stderr.String())
	}
	if got := a.invoke(t, "double", `{"x": 21}`); got != "0" {
		t.Fatalf("after the forced deploy double(21) = %s", got)
	}

	// Revision 2 has a function that does not compile: both stay on revision 1, greet too
	// (which revision 2 would change), and say where the error is.
	push(signDoc(t, keys, key, labDoc(2, 5, "function handle(e) return e.payload.x * end")))
	for _, g := range []*fleetGateway{a, b} {
		r := watch.waitRevision(t, g.id, 1, "revision 2 not applied")
		if !strings.Contains(r.LastError, "double") {
			t.Fatalf("%s: the error does not name the function: %s", g.id, r.LastError)
		}
		if got := g.invoke(t, "greet", `{"name": "fleet"}`); got != `"hello fleet"` {
			t.Fatalf("%s after the bad revision: greet = %s", g.id, got)
		}
	}
	if got := b.invoke(t, "double", `{"x": 21}`); got != "42" {
		t.Fatalf("gw-b after the bad revision: double(21) = %s", got)
	}

	// Revision 3, pushed while gw-b is stopped: gw-a takes it (the fleet wins over the
	// forced local deploy again, greet is unchanged and keeps its version); gw-b does
	// when it comes back, and gw-c, started after the push, too.
	b.c.stop(t)
	poll.Eventually(t, "gw-b to say offline", func() bool {
		watch.mu.Lock()
		defer watch.mu.Unlock()
		return watch.online["gw-b"] == "offline"
	})
	greetBefore := a.functions(t)["greet"].Version
	push(signDoc(t, keys, key, labDoc(3, 3, "")))
	watch.waitRevision(t, "gw-a", 3, "")
	if got := a.invoke(t, "double", `{"x": 21}`); got != "63" {
		t.Fatalf("gw-a on revision 3: double(21) = %s", got)
	}
	if fs := a.functions(t); fs["greet"].Version != greetBefore || fs["double"].ManagedBy != "fleet" || fs["double"].Revision != 3 {
		t.Fatalf("gw-a on revision 3: %+v (greet was version %d)", fs, greetBefore)
	}
	table := fleetCLI(t, "status", "--broker", cloud.URL)
	if !regexp.MustCompile(`(?m)^gw-b\s+group:lab@1\s+offline\s+.*\d{4}-\d\d-\d\dT`).MatchString(table) || !regexp.MustCompile(`(?m)^gw-a\s+group:lab@3\s+online`).MatchString(table) {
		t.Fatalf("fleet status:\n%s", table)
	}
	b.start(t)
	watch.waitRevision(t, "gw-b", 3, "")
	c := newFleetGateway(t, "gw-c", cloud.URL, string(pub))
	c.start(t)
	watch.waitRevision(t, "gw-c", 3, "")
	for _, g := range []*fleetGateway{b, c} {
		if got := g.invoke(t, "double", `{"x": 21}`); got != "63" {
			t.Fatalf("%s on revision 3: double(21) = %s", g.id, got)
		}
	}

	// Revision 1 pushed again (a replay): ignored and reported, also after a restart,
	// since the applied revision is in the store.
	push(rev1)
	for _, g := range []*fleetGateway{a, b, c} {
		watch.waitRevision(t, g.id, 3, "revision 1 ignored")
	}
	a.c.stop(t)
	a.start(t)
	watch.waitRevision(t, "gw-a", 3, "revision 1 ignored")
	if got := a.invoke(t, "double", `{"x": 21}`); got != "63" {
		t.Fatalf("gw-a restarted on the replay: double(21) = %s", got)
	}

	// Revision 4 signed by a key the gateways do not trust: refused.
	push(signDoc(t, keys, other, labDoc(4, 4, "")))
	for _, g := range []*fleetGateway{a, b, c} {
		watch.waitRevision(t, g.id, 3, "signature does not verify")
		if got := g.invoke(t, "double", `{"x": 21}`); got != "63" {
			t.Fatalf("%s after the wrongly signed revision: double(21) = %s", g.id, got)
		}
	}

	// A rollback to revision 1's functions is revision 5 (the broker holds 4), signed:
	// taken by all, while a replay of revision 1 stays ignored.
	if out := fleetCLI(t, "rollback", key, rev1, "--broker", cloud.URL); !strings.Contains(out, "rolled group:lab back to the functions of revision 1, pushed as revision 5") {
		t.Fatalf("rollback: %s", out)
	}
	for _, g := range []*fleetGateway{a, b, c} {
		watch.waitRevision(t, g.id, 5, "")
		if got := g.invoke(t, "double", `{"x": 21}`); got != "42" {
			t.Fatalf("%s after the rollback: double(21) = %s", g.id, got)
		}
	}

	// gw-c leaves the group: at its next start the group's functions go.
	c.c.stop(t)
	cfg, err := os.ReadFile(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.cfg, bytes.Replace(cfg, []byte("groups: [lab]"), []byte("groups: [elsewhere]"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	c.start(t)
	if fs := c.functions(t); len(fs) != 0 {
		t.Fatalf("gw-c left the group and still runs %v", fs)
	}
	poll.Eventually(t, "gw-c to report no layer", func() bool {
		r := watch.report("gw-c")
		return len(r.Layers) == 0 && len(r.Functions) == 0 && len(r.Groups) == 1 && r.Groups[0] == "elsewhere"
	})
}

// TestFleetNATSCluster: the same pushes through a 3-node NATS cluster's MQTT listeners,
// the gateways on the three nodes, the pushes on the third, which is killed during the
// push of revision 2: no gateway misses it, the one that was on the third node fails over
// to another (fleet.failover_brokers), and one started afterwards takes it too.
func TestFleetNATSCluster(t *testing.T) {
	cl := natstest.StartWith(t, 3, natstest.Options{MQTT: true})
	n1, n2, n3 := cl.Nodes[0], cl.Nodes[1], cl.Nodes[2]
	for _, n := range cl.Nodes { // the MQTT listener comes up once the cluster has its JetStream leaders
		poll.Within(t, 30*time.Second, n.Name+"'s MQTT listener", func() bool {
			c := paho.NewClient(paho.NewClientOptions().AddBroker(n.MQTTURL()).SetClientID("probe-" + n.Name).SetCleanSession(true))
			tok := c.Connect()
			ok := tok.WaitTimeout(5*time.Second) && tok.Error() == nil
			if ok {
				c.Disconnect(0)
			}
			return ok
		})
	}
	keys := t.TempDir()
	fleetCLI(t, "keygen", filepath.Join(keys, "fleet"))
	key := filepath.Join(keys, "fleet.key")
	pub, err := os.ReadFile(filepath.Join(keys, "fleet.pub"))
	if err != nil {
		t.Fatal(err)
	}
	watch := watchFleet(t, n1.MQTTURL())
	watch.timeout = time.Minute // a cluster that lost a node elects new leaders first
	a := newFleetGateway(t, "gw-a", n1.MQTTURL(), string(pub))
	b := newFleetGateway(t, "gw-b", n2.MQTTURL(), string(pub))
	d := newFleetGateway(t, "gw-d", n3.MQTTURL(), string(pub), n1.MQTTURL(), n2.MQTTURL())
	a.start(t)
	b.start(t)
	d.start(t)
	// Subscribed, as their first reports say: NATS's nodes learn of a retained message
	// late, and a subscription made in between would take it only at the next resync.
	for _, g := range []*fleetGateway{a, b, d} {
		poll.Eventually(t, g.id+"'s first report", func() bool { return watch.report(g.id).Gateway == g.id })
	}

	fleetCLI(t, "push", "--broker", n3.MQTTURL(), signDoc(t, keys, key, labDoc(1, 2, "")))
	for _, g := range []*fleetGateway{a, b, d} {
		watch.waitRevision(t, g.id, 1, "")
	}

	rev2 := signDoc(t, keys, key, labDoc(2, 3, ""))
	pushed := make(chan int, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		pushed <- Main(context.Background(), []string{"fleet", "push", "--broker", n3.MQTTURL(), "--timeout", "10s", rev2}, &stdout, &stderr)
	}()
	cl.Kill(n3)
	if code := <-pushed; code != exitOK {
		// n3 died before its PUBACK: push again, elsewhere, once the cluster has elected
		// new leaders for what n3 led (until then its MQTT listeners turn clients away).
		poll.Within(t, 30*time.Second, "a push of revision 2 to n1", func() bool {
			var stdout, stderr bytes.Buffer
			return Main(context.Background(), []string{"fleet", "push", "--broker", n1.MQTTURL(), "--timeout", "5s", rev2}, &stdout, &stderr) == exitOK
		})
	}
	for _, g := range []*fleetGateway{a, b, d} {
		watch.waitRevision(t, g.id, 2, "")
		if got := g.invoke(t, "double", `{"x": 21}`); got != "63" {
			t.Fatalf("%s on revision 2: double(21) = %s", g.id, got)
		}
	}
	// gw-c starts once n2 serves revision 2 as the retained document again: until the
	// cluster has new leaders for what n3 led, a subscription may go unanswered, and the
	// gateway would take the document only at its next resync.
	topic, _ := fleet.DesiredTopic("group:lab")
	poll.Within(t, time.Minute, "n2 to send revision 2 as retained", func() bool {
		probe := paho.NewClient(paho.NewClientOptions().AddBroker(n2.MQTTURL()).SetClientID("probe-rev2").SetCleanSession(true))
		if tok := probe.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			return false
		}
		defer probe.Disconnect(0)
		got := make(chan uint64, 1)
		probe.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
			var s fleet.Signed
			if json.Unmarshal(m.Payload(), &s) == nil {
				if d, err := fleet.Parse(s.Document); err == nil {
					select {
					case got <- d.Revision:
					default:
					}
				}
			}
		})
		select {
		case rev := <-got:
			return rev == 2
		case <-time.After(5 * time.Second):
			return false
		}
	})
	c := newFleetGateway(t, "gw-c", n2.MQTTURL(), string(pub))
	c.start(t)
	watch.waitRevision(t, "gw-c", 2, "")
}
