// Command fleet measures a fleet push on the real gateway binary (make bench-fleet):
// -gateways gateway processes on loopback, each with its data dir, embedded broker and
// console of its own, take their group's documents from a 3-node NATS cluster with
// JetStream, through its MQTT listeners (the gateways spread over the three nodes, the
// other two their fleet.failover_brokers).
//
//   - revision 1, -functions functions, pushed while -offline gateways are stopped
//     (cleanly): the time from the push (`moongate fleet push` starting, on the third
//     node) to each online gateway's report of it, and from each offline one's restart,
//     -back after the push, to its report;
//   - revision 2, one function of which does not compile: the time until every gateway
//     reports revision 1 still applied and the error naming that function;
//   - revision 3, as bad, pushed with --canary 5: the time until the push halts, and that
//     only the five canaries took it.
//
// It prints p50/p99/max of each phase, the messages the NATS nodes took in and sent out
// over it (summed over the nodes: routes and JetStream's own traffic included), and the
// total RSS of the gateways at the end.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/examples/bench/benchproc"
	"github.com/moongate/moongate/fleet"
	"github.com/moongate/moongate/internal/natstest"
)

func main() {
	moongate := flag.String("moongate", "bin/moongate", "the gateway binary")
	n := flag.Int("gateways", 100, "gateway processes")
	offline := flag.Int("offline", 10, "gateways stopped during the push of revision 1")
	back := flag.Duration("back", 30*time.Second, "when the offline gateways start again, after the push")
	functions := flag.Int("functions", 5, "functions of the revisions")
	memLimit := flag.String("memory-limit", "32MiB", "each gateway's gateway.memory_limit")
	timeout := flag.Duration("timeout", 3*time.Minute, "how long to wait for the reports of one phase")
	flag.Parse()
	if *offline > *n || *functions < 1 {
		log.Fatal("want -offline at most -gateways, and at least one function")
	}
	bin, err := filepath.Abs(*moongate) // the gateways work in directories of their own
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "moongate-bench-fleet-")
	if err != nil {
		log.Fatal(err)
	}
	b := &bench{moongate: bin, dir: dir, memLimit: *memLimit, timeout: *timeout}
	err = b.run(*n, *offline, *back, *functions)
	b.shutdown()
	os.RemoveAll(dir)
	if err != nil {
		log.Fatal(err)
	}
}

type bench struct {
	moongate, dir, memLimit string
	timeout                 time.Duration
	cluster                 *natstest.Cluster
	watch                   *watch
	gateways                []*gateway
	missed                  int // reports the phases waited for in vain
	addrs                   benchproc.Addrs
}

// gateway is one gateway process of the fleet.
type gateway struct {
	id, dir, console string
	p                *benchproc.Proc // nil while stopped
	started          time.Time
}

func (b *bench) run(n, offline int, back time.Duration, functions int) error {
	bin, err := natstest.Build(b.dir)
	if err != nil {
		return err
	}
	if b.cluster, err = natstest.Launch(bin, filepath.Join(b.dir, "nats"), 3, natstest.Options{MQTT: true}); err != nil {
		return err
	}
	nodes := b.cluster.Nodes
	if b.watch, err = newWatch(nodes[0].MQTTURL()); err != nil {
		return err
	}
	if err := b.cli("fleet", "keygen", "fleet"); err != nil {
		return err
	}
	bad := fmt.Sprintf("fn-%d", (functions+1)/2)
	rev1, err := b.sign(document(1, functions, ""))
	if err != nil {
		return err
	}
	rev2, err := b.sign(document(2, functions, bad))
	if err != nil {
		return err
	}
	fmt.Printf("%d gateways on a 3-node NATS cluster (MQTT), %d functions; %d offline during the push, back after %s\n",
		n, functions, offline, back)
	fmt.Printf("%-30s %9s %8s %8s %8s %10s %10s\n", "phase", "gateways", "p50", "p99", "max", "nats in", "nats out")
	ph := b.phase("first report, from start")
	for i := range n {
		g := &gateway{id: fmt.Sprintf("gw-%03d", i), dir: filepath.Join(b.dir, fmt.Sprintf("gw-%03d", i)), console: b.addrs.Next()}
		if err := b.configure(g, i%len(nodes)); err != nil {
			return err
		}
		b.gateways = append(b.gateways, g)
	}
	b.watch.expect(func(fleet.Report) bool { return true })
	if err := b.start(b.gateways); err != nil {
		return err
	}
	ph.done(b.gateways, b.watch.wait(b.gateways, b.timeout), func(g *gateway) time.Time { return g.started })

	// Revision 1 while some are away.
	away, online := b.gateways[:offline], b.gateways[offline:]
	if err := b.stop(away); err != nil {
		return err
	}
	b.watch.expect(func(r fleet.Report) bool { return applied(r, 1, functions) && r.LastError == "" })
	ph = b.phase("revision 1, online")
	if err := b.cli("fleet", "push", "--broker", nodes[len(nodes)-1].MQTTURL(), rev1); err != nil {
		return err
	}
	ph.done(online, b.watch.wait(online, b.timeout), func(*gateway) time.Time { return ph.start })
	if offline > 0 {
		time.Sleep(time.Until(ph.start.Add(back)))
		ph = b.phase("revision 1, back, from start")
		if err := b.start(away); err != nil {
			return err
		}
		ph.done(away, b.watch.wait(away, b.timeout), func(g *gateway) time.Time { return g.started })
	}

	// Revision 2 does not compile: everyone stays on revision 1 and says why.
	b.watch.expect(func(r fleet.Report) bool {
		return applied(r, 1, functions) && strings.Contains(r.LastError, "revision 2") && strings.Contains(r.LastError, bad)
	})
	ph = b.phase("bad revision 2, refused")
	if err := b.cli("fleet", "push", "--broker", nodes[len(nodes)-1].MQTTURL(), rev2); err != nil {
		return err
	}
	ph.done(b.gateways, b.watch.wait(b.gateways, b.timeout), func(*gateway) time.Time { return ph.start })

	// A canary push of another bad revision: the canaries refuse it, the push halts, and
	// no other gateway takes it.
	if err := b.canaryHalts(nodes[len(nodes)-1].MQTTURL(), functions, bad); err != nil {
		return err
	}

	var rss int64
	for _, g := range b.gateways {
		rss += g.p.RSS()
	}
	fmt.Printf("total RSS of the %d gateways: %.1f MiB (%.1f MiB each on average)\n",
		n, float64(rss)/(1<<20), float64(rss)/float64(n)/(1<<20))
	in, out := messages(b.cluster)
	fmt.Printf("NATS messages since the cluster started: %d in, %d out\n", in, out)
	if b.missed > 0 {
		return fmt.Errorf("%d reports missing (a gateway counted once per phase)", b.missed)
	}
	return nil
}

// canaryHalts pushes a bad revision 3 with --canary 5: the push must halt once the
// canaries refuse it, and the rest must show no sign of revision 3.
func (b *bench) canaryHalts(broker string, functions int, bad string) error {
	const canaries = 5
	if len(b.gateways) <= canaries {
		return nil
	}
	plain := filepath.Join(b.dir, "rev3.json")
	raw, _ := json.Marshal(document(3, functions, bad))
	if err := os.WriteFile(plain, raw, 0o644); err != nil {
		return err
	}
	start := time.Now()
	err := b.cli("fleet", "push", "--broker", broker, "--canary", fmt.Sprint(canaries), "--sign-key", "fleet.key",
		"--canary-wait", b.timeout.String(), plain)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "canary push halted") {
		return fmt.Errorf("the canary push of a bad revision did not halt: %v", err)
	}
	time.Sleep(2 * time.Second) // a gateway that took revision 3 regardless would say so by now
	b.watch.mu.Lock()
	took3 := 0
	for _, r := range b.watch.last {
		if strings.Contains(r.LastError, "revision 3") {
			took3++
		}
	}
	b.watch.mu.Unlock()
	fmt.Printf("canary push of a bad revision 3 to %d: halted after %.1fs; %d gateways refused it, %d never took it\n",
		canaries, took.Seconds(), took3, len(b.gateways)-took3)
	if took3 != canaries {
		return fmt.Errorf("%d gateways took the canary revision, want the %d canaries", took3, canaries)
	}
	return nil
}

// applied says whether the report shows revision rev of the group applied, all of its
// functions from it.
func applied(r fleet.Report, rev uint64, functions int) bool {
	if len(r.Layers) != 1 || r.Layers[0].Revision != rev || len(r.Functions) != functions {
		return false
	}
	for _, f := range r.Functions {
		if f.Revision != rev {
			return false
		}
	}
	return true
}

// document is revision rev of group:fleet: functions functions, of which the one named
// bad, if any, does not compile.
func document(rev uint64, functions int, bad string) fleet.Document {
	d := fleet.Document{Revision: rev, Target: "group:fleet"}
	for i := 1; i <= functions; i++ {
		name := fmt.Sprintf("fn-%d", i)
		src := fmt.Sprintf("function handle(e) return e.payload.x * %d end", i)
		if name == bad {
			src = "function handle(e) return e.payload.x * end"
		}
		d.Functions = append(d.Functions, fleet.Function{Name: name, Source: src, Triggers: []string{"mqtt:in/" + name}})
	}
	return d
}

// sign writes the document and signs it with the CLI; it returns the signed file.
func (b *bench) sign(d fleet.Document) (string, error) {
	plain := filepath.Join(b.dir, fmt.Sprintf("rev%d.json", d.Revision))
	raw, _ := json.Marshal(d)
	if err := os.WriteFile(plain, raw, 0o644); err != nil {
		return "", err
	}
	signed := strings.TrimSuffix(plain, ".json") + ".signed.json"
	return signed, b.cli("fleet", "sign", "fleet.key", plain, "-o", signed)
}

func (b *bench) cli(args ...string) error {
	cmd := exec.Command(b.moongate, args...)
	cmd.Dir = b.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("moongate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// configure writes the gateway's directory: its config and the fleet's public key. Its
// broker is the cluster's node node, the others its failover.
func (b *bench) configure(g *gateway, node int) error {
	var failover []string
	for i, n := range b.cluster.Nodes {
		if i != node {
			failover = append(failover, n.MQTTURL())
		}
	}
	pub, err := os.ReadFile(filepath.Join(b.dir, "fleet.pub"))
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`gateway:
  id: %s
  data_dir: ./data
  memory_limit: %s
  console: {listen: %s}
mqtt:
  embedded: {listen: %s}
fleet:
  broker: %s
  failover_brokers: [%s]
  groups: [fleet]
  keys: [fleet.pub]
`, g.id, b.memLimit, g.console, b.addrs.Next(), b.cluster.Nodes[node].MQTTURL(), strings.Join(failover, ", "))
	if err := os.MkdirAll(g.dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(g.dir, "fleet.pub"), pub, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(g.dir, "moongate.yaml"), []byte(cfg), 0o644)
}

// start starts the gateways at once and waits until each serves its console.
func (b *bench) start(gs []*gateway) error {
	for _, g := range gs {
		p, err := benchproc.Start(g.dir, "gateway", b.moongate, "run", "-c", "moongate.yaml")
		if err != nil {
			return err
		}
		g.p, g.started = p, time.Now()
	}
	for _, g := range gs {
		if err := benchproc.WaitListening(g.p, g.console); err != nil {
			return err
		}
	}
	return nil
}

// stop stops the gateways cleanly, all at once.
func (b *bench) stop(gs []*gateway) error {
	errs := make(chan error, len(gs))
	var wg sync.WaitGroup
	for _, g := range gs {
		if g.p == nil {
			continue
		}
		wg.Go(func() { errs <- g.p.Term(30 * time.Second) })
	}
	wg.Wait()
	for _, g := range gs {
		g.p = nil
	}
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// shutdown stops whatever runs, the gateways cleanly.
func (b *bench) shutdown() {
	if err := b.stop(b.gateways); err != nil {
		log.Print(err)
	}
	if b.watch != nil {
		b.watch.client.Disconnect(100)
	}
	if b.cluster != nil {
		b.cluster.Stop()
	}
}

// phase is one row of the table.
type phase struct {
	name      string
	start     time.Time
	b         *bench
	in0, out0 int64
}

func (b *bench) phase(name string) *phase {
	p := &phase{name: name, b: b}
	p.in0, p.out0 = messages(b.cluster)
	p.start = time.Now()
	return p
}

// done prints the row: the times from each gateway's from to its report at, of those
// that reported.
func (p *phase) done(gs []*gateway, at map[string]time.Time, from func(*gateway) time.Time) {
	var ds []time.Duration
	for _, g := range gs {
		if t, ok := at[g.id]; ok {
			ds = append(ds, t.Sub(from(g)))
		}
	}
	slices.Sort(ds)
	pct := func(q float64) string {
		if len(ds) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fs", ds[int(math.Ceil(q*float64(len(ds))))-1].Seconds())
	}
	in, out := messages(p.b.cluster)
	fmt.Printf("%-30s %9s %8s %8s %8s %10d %10d\n", p.name, fmt.Sprintf("%d/%d", len(ds), len(gs)),
		pct(0.5), pct(0.99), pct(1), in-p.in0, out-p.out0)
	p.b.missed += len(gs) - len(ds)
	p.b.watch.misses(gs, at)
}

// messages sums the in_msgs and out_msgs of the cluster's nodes (/varz).
func messages(c *natstest.Cluster) (in, out int64) {
	for _, n := range c.Nodes {
		resp, err := http.Get(n.MonitorURL() + "/varz")
		if err != nil {
			log.Printf("%s /varz: %v", n.Name, err)
			continue
		}
		var v struct {
			In  int64 `json:"in_msgs"`
			Out int64 `json:"out_msgs"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			log.Printf("%s /varz: %v", n.Name, err)
		}
		resp.Body.Close()
		in, out = in+v.In, out+v.Out
	}
	return in, out
}

// watch follows the gateways' reports on the cloud broker and notes when each first
// reported what the phase expects.
type watch struct {
	client paho.Client
	mu     sync.Mutex
	want   func(fleet.Report) bool
	at     map[string]time.Time
	last   map[string]fleet.Report
}

func newWatch(broker string) (*watch, error) {
	w := &watch{at: map[string]time.Time{}, last: map[string]fleet.Report{}}
	subscribed := make(chan error, 1)
	// Subscribed at every connection: a clean session loses its subscription when the
	// client reconnects.
	o := paho.NewClientOptions().AddBroker(broker).SetClientID("bench-fleet-watch").SetCleanSession(true).
		SetOnConnectHandler(func(c paho.Client) {
			tok := c.Subscribe(fleet.AllReported, 1, w.take)
			tok.Wait()
			select {
			case subscribed <- tok.Error():
			default:
			}
		})
	w.client = paho.NewClient(o)
	if tok := w.client.Connect(); tok.Wait() && tok.Error() != nil {
		return nil, fmt.Errorf("connect %s: %w", broker, tok.Error())
	}
	if err := <-subscribed; err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	return w, nil
}

// take notes a report.
func (w *watch) take(_ paho.Client, m paho.Message) {
	now := time.Now()
	var r fleet.Report
	if err := json.Unmarshal(m.Payload(), &r); err != nil {
		log.Printf("report on %s: %v", m.Topic(), err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last[r.Gateway] = r
	if _, seen := w.at[r.Gateway]; !seen && w.want != nil && w.want(r) {
		w.at[r.Gateway] = now
	}
}

// expect starts a phase: from now on the watch notes reports that satisfy want.
func (w *watch) expect(want func(fleet.Report) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want, w.at = want, map[string]time.Time{}
}

// wait waits until every gateway of gs reported what the phase expects, or timeout; it
// returns when each of those that did reported it.
func (w *watch) wait(gs []*gateway, timeout time.Duration) map[string]time.Time {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		at := map[string]time.Time{}
		for _, g := range gs {
			if t, ok := w.at[g.id]; ok {
				at[g.id] = t
			}
		}
		w.mu.Unlock()
		if len(at) == len(gs) || time.Now().After(deadline) {
			return at
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// misses prints the last report of the first few gateways of gs that are not in at.
func (w *watch) misses(gs []*gateway, at map[string]time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	shown := 0
	for _, g := range gs {
		if _, ok := at[g.id]; !ok && shown < 3 {
			if r, ok := w.last[g.id]; ok {
				fmt.Printf("  %s last reported layers %v, error %q\n", g.id, r.Layers, r.LastError)
			} else {
				fmt.Printf("  %s has not reported\n", g.id)
			}
			shown++
		}
	}
}
