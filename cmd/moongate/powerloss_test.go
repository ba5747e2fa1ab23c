//go:build linux && (amd64 || arm64)

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/mosquittotest"
	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/internal/powercut"
	"github.com/moongate/moongate/sync/store"
)

var powerCuts = flag.Int("cuts", 3, "TestPowerLoss: power cuts per broker (make test-powerloss runs 20)")

// Sizes of the power-loss scenario, per cut.
const (
	powerDevices = 4
	powerPerCut  = 250 // messages per device per cut
	powerWindow  = 8
)

// TestPowerLoss (issue 19): the gateway runs with its data dir on a filesystem that keeps
// what was not synced apart (internal/powercut); devices publish numbered QoS 1 readings,
// a function counts them in KV and emits each to a sink whose receiver goes up and down.
// At random points the gateway is killed with SIGKILL and the power is cut: everything not
// made durable by fsync, msync or a directory fsync is dropped, and the last page written
// to each file may be torn. Then the gateway starts again on what is left. Checked at
// every cut: the store opens; every reading a device saw acknowledged (by the embedded
// broker, whose PUBACK follows the commit) is committed; per device the committed seqs are
// 1..n without gaps and the KV counters agree with them; every record the receiver got is
// still in the store. At the end: every reading committed exactly once, and the receiver
// got every record, at least once, in order. A failure names the cut and the seed; replay
// with `go test ./cmd/moongate -run TestPowerLoss -seed N`, run longer with -cuts.
func TestPowerLoss(t *testing.T) {
	seed := *modelSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: go test ./cmd/moongate -run TestPowerLoss -seed %d)", seed, seed)
	t.Run("embedded", func(t *testing.T) { powerLoss(t, seed, "") })
	t.Run("mosquitto", func(t *testing.T) {
		broker := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{Config: mosquittoQueueConfig})
		powerLoss(t, seed, broker.URL)
	})
}

func powerLoss(t *testing.T, seed uint64, broker string) {
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	cuts := *powerCuts
	dir := t.TempDir()
	disk, data := filepath.Join(dir, "disk"), filepath.Join(dir, "data")
	for _, d := range []string{disk, data} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pfs, err := powercut.Mount(disk, data, powercut.Options{Tear: true, Rand: rng})
	if err != nil {
		t.Fatalf("mount the power-cut filesystem (needs /dev/fuse): %v", err)
	}
	t.Cleanup(func() {
		if err := pfs.Close(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})

	rc := newCloud(t)
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	deviceBroker := fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)
	if broker == "" {
		broker = "embedded"
	} else {
		deviceBroker = broker
	}
	config := counterConfig(broker, mqttPort, apiPort) + fmt.Sprintf(`sync:
  sinks:
    - name: cloud
      http: {url: "%s/ingest", timeout: 2s}
      batch: {max_records: 50, linger: 10ms}
`, rc.url())
	cfg := writeGatewayFiles(t, dir, config, map[string]string{"counter.lua": counterLua})
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()

	devs := newDevices("d", deviceBroker, powerDevices, powerPerCut*(cuts+1), powerWindow)
	if broker != "embedded" {
		// Mosquitto acknowledges at once: paced, the devices are still publishing
		// while the gateway is cut, not done before the first cut.
		for _, d := range devs {
			d.interval = 1200 * time.Millisecond / powerPerCut
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(30+10*cuts)*time.Second)
	defer cancel()
	errc := runDevices(ctx, devs)

	embedded := broker == "embedded"
	total := powerDevices * powerPerCut * (cuts + 1)
	prev := 0
	for cut, at := range killPoints(rng, total, cuts) {
		where := fmt.Sprintf("power cut %d of %d (seed %d)", cut+1, cuts, seed)
		// Halfway, the receiver may go down or come back while the gateway runs.
		mid := (prev + at) / 2
		poll.Within(t, 30*time.Second, fmt.Sprintf("%d messages acknowledged", mid), func() bool { return totalAcked(devs) >= mid })
		if rng.IntN(2) == 0 {
			rc.setUp(!rc.isUp())
		}
		poll.Within(t, 30*time.Second, fmt.Sprintf("%d messages acknowledged", at), func() bool { return totalAcked(devs) >= at })
		prev = at
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		gw.kill9()
		acked := map[string]int{}
		for _, d := range devs {
			acked[d.id] = int(d.acked.Load())
		}
		delivered := rc.maxSeqs()
		files, dirOps := pfs.Pending()
		if err := pfs.Cut(); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		// A copy, made by another process: the next gateway process, not the test,
		// replays the store, and this process, which serves the mount, must not map
		// files on it (see internal/powercut).
		cp := filepath.Join(t.TempDir(), "store")
		if out, err := exec.Command("cp", "-a", "--sparse=always", gw.storeDir(), cp).CombinedOutput(); err != nil {
			t.Fatalf("%s: copy the store: %v: %s", where, err, out)
		}
		st, err := store.Open(store.Options{Dir: cp, MinFreeBytes: -1})
		if err != nil {
			t.Fatalf("%s: the store does not open: %v", where, err)
		}
		if !embedded {
			acked = nil // Mosquitto acknowledged them; its session holds what the gateway did not commit
		}
		checkPowerState(t, st, devs, acked, rc, delivered)
		st.Close()
		if t.Failed() {
			t.Fatalf("%s: acknowledged or delivered data lost (replay: -seed %d)", where, seed)
		}
		t.Logf("%s at %d acknowledged %v: dropped the unsynced writes of %d files and %d directory changes (at least)",
			where, totalAcked(devs), acked, files, dirOps)
		if rng.IntN(2) == 0 {
			rc.setUp(!rc.isUp())
		}
		gw.start()
	}
	rc.setUp(true)
	waitDevices(t, errc, len(devs))
	want := map[string]int{}
	for _, d := range devs {
		want[d.id] = d.n
	}
	poll.Within(t, 60*time.Second, "the receiver to get every record", func() bool { return rc.complete(want) })
	gw.stop()
	st := openStoreCopy(t, gw.storeDir()) // not on the mount, as above
	dups := checkPowerState(t, st, devs, want, rc, nil)
	st.Close()
	// Each cut can take the PUBACKs of a device's whole window (embedded), or what the
	// gateway had from Mosquitto and not acknowledged.
	bound := cuts * powerDevices * powerWindow
	if !embedded {
		bound = cuts * powerDevices * mosquittoBacklog
	}
	t.Logf("%d gateway processes, %d power cuts; the function skipped %d redeliveries (bound %d)", gw.starts, cuts, dups, bound)
	if dups > bound {
		t.Errorf("the function saw %d redelivered messages, more than the bound %d", dups, bound)
	}
	rc.checkOrder(t, want)
	if t.Failed() {
		t.Fatalf("after %d power cuts (replay: -seed %d)", cuts, seed)
	}
}

// checkPowerState checks the counter function's state in st: per device, the KV counter
// and the last seq agree and there was no gap; the seqs 1..last are each in the outbox
// (in order) or at the receiver, which has none beyond last; and last covers acked[device].
// It returns the redeliveries the function skipped.
func checkPowerState(t *testing.T, st *store.Store, devs []*device, acked map[string]int, rc *cloud, delivered map[string]int) (dups int) {
	t.Helper()
	pending := outboxSeqs(t, st)
	got := rc.seqs()
	for _, d := range devs {
		last := kvInt(t, st, "counter", "last/"+d.id)
		count := kvInt(t, st, "counter", "count/"+d.id)
		if gaps := kvInt(t, st, "counter", "gaps/"+d.id); gaps != 0 {
			t.Errorf("%s: the function saw %d gaps in the seqs: a message was lost or reordered", d.id, gaps)
		}
		if count != last {
			t.Errorf("%s: count %d, last seq %d: KV disagrees with itself", d.id, count, last)
		}
		p := pending[d.id]
		for i, s := range p {
			if s != p[0]+i || s > last {
				t.Errorf("%s: outbox seqs %v...: out of order, twice, with a gap, or beyond the last seq %d", d.id, p[:min(len(p), 8)], last)
				break
			}
		}
		for s := 1; s <= last; s++ {
			if !got[d.id][s] && (len(p) == 0 || s < p[0]) {
				t.Errorf("%s: seq %d is committed (last %d) but neither in the outbox (from %v) nor at the receiver", d.id, s, last, p[:min(len(p), 1)])
				break
			}
		}
		if delivered[d.id] > last {
			t.Errorf("%s: the receiver got seq %d, the store has up to %d", d.id, delivered[d.id], last)
		}
		if a, ok := acked[d.id]; ok && last < a {
			t.Errorf("%s: %d messages acknowledged, last committed seq %d", d.id, a, last)
		}
		dups += kvInt(t, st, "counter", "dups/"+d.id)
	}
	return dups
}

// cloud is the sink's receiver: it keeps, per device, the seqs in the order they first
// arrived, and it can be down (its listener closed, connections cut).
type cloud struct {
	t    *testing.T
	addr string

	mu    sync.Mutex
	srv   *httptest.Server
	seen  map[string]map[int]bool
	order map[string][]int // device → seqs in order of first arrival
}

func newCloud(t *testing.T) *cloud {
	c := &cloud{t: t, seen: map[string]map[int]bool{}, order: map[string][]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = l.Addr().String()
	c.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(c.serve)}}
	c.srv.Start()
	t.Cleanup(func() { c.setUp(false) })
	return c
}

func (c *cloud) url() string { return "http://" + c.addr }

func (c *cloud) isUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srv != nil
}

func (c *cloud) setUp(up bool) {
	c.mu.Lock()
	srv := c.srv
	c.mu.Unlock()
	switch {
	case !up && srv != nil:
		srv.CloseClientConnections()
		srv.Close()
		c.mu.Lock()
		c.srv = nil
		c.mu.Unlock()
	case up && srv == nil:
		l, err := net.Listen("tcp", c.addr)
		if err != nil {
			c.t.Fatalf("listen again on %s: %v", c.addr, err)
		}
		srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(c.serve)}}
		srv.Start()
		c.mu.Lock()
		c.srv = srv
		c.mu.Unlock()
	}
}

func (c *cloud) serve(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var b struct {
		Records []struct {
			Data reading `json:"data"`
		} `json:"records"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		c.t.Errorf("batch: %v: %.200s", err, raw)
		http.Error(w, "bad batch", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rec := range b.Records {
		d := rec.Data
		if c.seen[d.Device] == nil {
			c.seen[d.Device] = map[int]bool{}
		}
		if !c.seen[d.Device][d.Seq] {
			c.seen[d.Device][d.Seq] = true
			c.order[d.Device] = append(c.order[d.Device], d.Seq)
		}
	}
	c.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// seqs is, per device, the set of seqs received.
func (c *cloud) seqs() map[string]map[int]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]map[int]bool{}
	for d, seqs := range c.seen {
		m[d] = maps.Clone(seqs)
	}
	return m
}

// maxSeqs is, per device, the highest seq received.
func (c *cloud) maxSeqs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int{}
	for d, seqs := range c.order {
		for _, s := range seqs {
			m[d] = max(m[d], s)
		}
	}
	return m
}

func (c *cloud) complete(want map[string]int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, n := range want {
		if len(c.seen[d]) < n {
			return false
		}
	}
	return true
}

// checkOrder: per device, the first arrivals are seqs 1..n in order.
func (c *cloud) checkOrder(t *testing.T, want map[string]int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, n := range want {
		seqs := c.order[d]
		for i, s := range seqs {
			if s != i+1 {
				t.Errorf("%s: the receiver's %dth new record is seq %d: delivered out of order", d, i+1, s)
				break
			}
		}
		if len(seqs) != n {
			t.Errorf("%s: the receiver got %d distinct records, want %d", d, len(seqs), n)
		}
	}
}
