package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/sync/store"
	"github.com/moongate/moongate/sync/store/storetest"
)

// The fault tests (crash_test.go, diskfull_test.go, sink_e2e_test.go) share these: a gateway
// process that can be killed and started again on the same data dir and ports, simulated
// devices that resend what was not acknowledged, and direct reads of the gateway's store.

// gatewayProc is one gateway, across the processes that run it one after the other.
type gatewayProc struct {
	t        *testing.T
	dir, cfg string
	apiPort  int
	c        *child
	starts   int
}

func newGatewayProc(t *testing.T, dir, cfg string, apiPort int) *gatewayProc {
	return &gatewayProc{t: t, dir: dir, cfg: cfg, apiPort: apiPort}
}

func (p *gatewayProc) api() string { return fmt.Sprintf("http://127.0.0.1:%d", p.apiPort) }

// start runs a new process and waits until its API answers.
func (p *gatewayProc) start() {
	p.t.Helper()
	p.c = startGateway(p.t, p.dir, p.cfg, p.apiPort)
	p.starts++
}

// kill9 kills the process with SIGKILL: nothing of it runs after the signal, no deferred
// close, no flush.
func (p *gatewayProc) kill9() {
	p.t.Helper()
	if err := p.c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill -9: %v", err)
	}
	<-p.c.exited
}

// stop is the clean stop: SIGTERM, exit 0 within 5 s.
func (p *gatewayProc) stop() {
	p.t.Helper()
	p.c.stop(p.t)
}

func (p *gatewayProc) storeDir() string { return filepath.Join(p.dir, "data", "store") }

// metric sums every series of the named metric on /metrics (all label sets).
func (p *gatewayProc) metric(name string) float64 {
	p.t.Helper()
	resp, err := http.Get(p.api() + "/metrics")
	if err != nil {
		p.t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a longer name with this prefix
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// writeGatewayFiles writes moongate.yaml and the function sources into a new directory.
func writeGatewayFiles(t *testing.T, dir, config string, files map[string]string) (cfg string) {
	t.Helper()
	for name, body := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg = filepath.Join(dir, "moongate.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// openStoreCopy opens a copy of a store directory, so that a killed gateway's store is
// read exactly as it was left, and the next gateway process, not the test, replays it.
func openStoreCopy(t *testing.T, dir string) *store.Store {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "store")
	if out, err := exec.Command("cp", "-a", "--sparse=always", dir, cp).CombinedOutput(); err != nil {
		t.Fatalf("copy the store: %v: %s", err, out)
	}
	return storetest.Open(t, cp)
}

// kvInt reads a KV value that is a JSON integer; 0 when the key is missing.
func kvInt(t *testing.T, st *store.Store, ns, key string) int {
	t.Helper()
	v, ok, err := st.KVGet(ns, key)
	if err != nil {
		t.Fatalf("kv %s %s: %v", ns, key, err)
	}
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(string(v))
	if err != nil {
		t.Fatalf("kv %s %s = %s: not an integer", ns, key, v)
	}
	return n
}

// device is a simulated MQTT device that publishes numbered QoS 1 messages to its own topic
// and resends, on a new connection, every message it has not seen acknowledged: what a
// device with a persistent outgoing queue does. Acknowledgements come in order (one
// connection, one topic), so acked is a prefix: every seq up to it was acknowledged.
type device struct {
	id, broker, topic string
	n                 int           // messages to publish: seq 1..n
	window            int           // QoS 1 messages in flight
	interval          time.Duration // minimum time between publishes; 0: as fast as the window allows
	ackTimeout        time.Duration // a message not acknowledged in this time is resent on a new connection

	acked    atomic.Int64 // highest seq acknowledged
	maxSent  atomic.Int64
	resent   atomic.Int64 // publishes of a seq sent before
	connects atomic.Int64
}

func newDevices(prefix, broker string, count, n, window int) []*device {
	var ds []*device
	for i := 1; i <= count; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		ds = append(ds, &device{id: id, broker: broker, topic: "dev/" + id + "/x", n: n, window: window, ackTimeout: 20 * time.Second})
	}
	return ds
}

type reading struct {
	Device string `json:"device"`
	Seq    int    `json:"seq"`
}

// run publishes until every message is acknowledged or ctx ends.
func (d *device) run(ctx context.Context) error {
	start := time.Now()
	for d.acked.Load() < int64(d.n) {
		c, err := d.connect(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w (acked %d of %d)", d.id, err, d.acked.Load(), d.n)
		}
		d.publish(ctx, c, start)
		c.Disconnect(0)
	}
	return nil
}

func (d *device) connect(ctx context.Context) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker(d.broker).SetClientID(d.id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(2 * time.Second).SetWriteTimeout(2 * time.Second).
		SetKeepAlive(10 * time.Second)
	for {
		c := paho.NewClient(opts)
		tok := c.Connect()
		if tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
			d.connects.Add(1)
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// publish sends from the first unacknowledged seq on, until all are acknowledged or an
// acknowledgement fails (connection lost) or times out.
func (d *device) publish(ctx context.Context, c paho.Client, start time.Time) {
	type sent struct {
		seq int
		tok paho.Token
	}
	var q []sent
	next := int(d.acked.Load()) + 1
	for {
		for len(q) < d.window && next <= d.n && ctx.Err() == nil {
			if d.interval > 0 {
				if wait := time.Until(start.Add(time.Duration(next) * d.interval)); wait > 0 {
					if len(q) > 0 {
						break // collect acks meanwhile
					}
					time.Sleep(wait)
				}
			}
			body, _ := json.Marshal(reading{Device: d.id, Seq: next})
			if int64(next) <= d.maxSent.Load() {
				d.resent.Add(1)
			} else {
				d.maxSent.Store(int64(next))
			}
			q = append(q, sent{next, c.Publish(d.topic, 1, false, body)})
			next++
		}
		if len(q) == 0 || ctx.Err() != nil {
			return
		}
		if !q[0].tok.WaitTimeout(d.ackTimeout) || q[0].tok.Error() != nil {
			return
		}
		d.acked.Store(int64(q[0].seq))
		q = q[1:]
	}
}

// runDevices runs every device; the channel gets one result per device.
func runDevices(ctx context.Context, ds []*device) <-chan error {
	errc := make(chan error, len(ds))
	for _, d := range ds {
		go func() { errc <- d.run(ctx) }()
	}
	return errc
}

func waitDevices(t *testing.T, errc <-chan error, n int) {
	t.Helper()
	for range n {
		if err := <-errc; err != nil {
			t.Fatalf("device: %v", err)
		}
	}
}

func totalAcked(ds []*device) int {
	n := 0
	for _, d := range ds {
		n += int(d.acked.Load())
	}
	return n
}

// testRand is seeded from MOONGATE_FAULT_SEED when set, so a failing run can be replayed.
func testRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MOONGATE_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MOONGATE_FAULT_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("random points from seed %d (replay with MOONGATE_FAULT_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed>>1|1))
}
