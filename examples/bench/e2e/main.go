// Command e2e measures the real gateway binary on the peer workload of issue 12, beside
// Mosquitto passing the same readings through to one subscriber, alternating the systems
// round by round in one run (the shared cores drift between sittings). It prints figures
// and asserts nothing. `make bench-e2e` runs it.
//
// The workload: DEVICES devices publish {"device","seq","ts","temp"} on sensors/dev-K/temp;
// every tenth reading is above 30, and the function publishes an alert with the same seq
// and ts to alerts/dev-K. A receiver subscribed to alerts/# (sensors/# for Mosquitto alone)
// checks that each arrives once and measures its latency from ts.
//
// For each system and scenario it prints: the processed rate (readings over the time from
// the first publish to the last expected message), loss and duplicates of what the
// receiver expected, p50/p99 latency, CPU µs per reading of the engine's processes (the
// gateway, plus Mosquitto where it carries the traffic), their peak RSS, and the rate over
// Mosquitto's passthrough in the same round.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moongate/moongate/examples/bench/benchproc"
)

func main() {
	var (
		moongate  = flag.String("moongate", "bin/moongate", "the gateway binary; several, comma-separated, are measured alternately as SYSTEM#1, SYSTEM#2...")
		mosquitto = flag.String("mosquitto", "/usr/sbin/mosquitto", "the Mosquitto binary")
		rounds    = flag.Int("rounds", 3, "alternated rounds")
		devices   = flag.Int("devices", 100, "devices")
		total     = flag.Int("readings", 200000, "readings per run, over all devices")
		scenarios = flag.String("scenarios", "full,20k,qos1,backlog,neighbour", "of full (QoS 0 at full speed), 20k (QoS 0 at 20k/s), qos1 (QoS 1 in and out, window 1000), backlog (QoS 1 queued by Mosquitto while the gateway is down, drained when it starts; via-mosquitto only), neighbour (10 good devices at 500 readings/s in all, quiet and beside a flooding device and a runaway function; embedded only)")
		systems   = flag.String("systems", "mosquitto,embedded,via-mosquitto", "of mosquitto (passthrough), embedded (the gateway's broker), via-mosquitto (the gateway on Mosquitto)")
		inflight  = flag.Int("max-inflight", 1000, "Mosquitto's max_inflight_messages toward the gateway and the receiver")
		inStep    = flag.Bool("in-step", false, "20k: every device sends at the same instants (a burst of 100 every 5 ms) instead of on schedules spread over the interval")
		profile   = flag.String("cpuprofile", "", "write a CPU profile of the gateway's first seconds under load to this file prefix (gateway.debug.pprof)")
	)
	flag.Parse()
	var bins []string
	for _, b := range strings.Split(*moongate, ",") {
		abs, err := filepath.Abs(b)
		if err != nil {
			log.Fatal(err)
		}
		bins = append(bins, abs)
	}
	// Every (system, binary) pair, in the order each round runs them.
	type target struct {
		sys, label, bin string
		attack          bool // neighbour: the flood and the runaway function run beside
	}
	var targets []target
	for _, sys := range strings.Split(*systems, ",") {
		if sys == "mosquitto" {
			targets = append(targets, target{sys: sys, label: sys})
			continue
		}
		for i, b := range bins {
			label := sys
			if len(bins) > 1 {
				label = fmt.Sprintf("%s#%d", sys, i+1)
			}
			targets = append(targets, target{sys: sys, label: label, bin: b})
		}
	}
	neighbourTargets := func() []target {
		var out []target
		for i, b := range bins {
			suffix := ""
			if len(bins) > 1 {
				suffix = fmt.Sprintf("#%d", i+1)
			}
			out = append(out, target{"embedded", "quiet" + suffix, b, false}, target{"embedded", "attacked" + suffix, b, true})
		}
		return out
	}
	allTargets := targets
	for _, sc := range strings.Split(*scenarios, ",") {
		l, err := scenario(sc, *devices, *total)
		if err != nil {
			log.Fatal(err)
		}
		l.inStep = *inStep
		targets = allTargets
		if l.neighbour {
			targets = neighbourTargets()
		}
		fmt.Printf("\n## %s: %d devices, %d readings\n", sc, l.devices, l.devices*l.readings)
		fmt.Printf("%-14s %5s %10s %7s %5s %9s %9s %-16s %-18s %7s\n", "system", "round", "readings/s", "loss", "dups", "p50", "p99", "CPU µs/reading", "peak RSS", "vs pass")
		rows := map[string][]row{}
		for round := 1; round <= *rounds; round++ {
			var pass float64
			for _, tg := range targets {
				if l.backlog && tg.sys != "via-mosquitto" {
					continue
				}
				prof := ""
				if *profile != "" {
					prof = fmt.Sprintf("%s-%s-%s-%d.pprof", *profile, sc, strings.ReplaceAll(tg.label, "#", ""), round)
				}
				lt := *l
				lt.attack = tg.attack
				r, err := run(tg.sys, sc, &lt, tg.bin, *mosquitto, *inflight, prof)
				if err != nil {
					log.Fatalf("%s %s round %d: %v", tg.label, sc, round, err)
				}
				if tg.sys == "mosquitto" || l.neighbour && !tg.attack {
					pass = r.rate
				}
				if pass > 0 {
					r.ratio = r.rate / pass
				}
				rows[tg.label] = append(rows[tg.label], r)
				fmt.Println(r.format(tg.label, strconv.Itoa(round)))
			}
		}
		if *rounds > 1 {
			for _, tg := range targets {
				if len(rows[tg.label]) > 0 {
					fmt.Println(median(rows[tg.label]).format(tg.label, "med"))
				}
			}
		}
	}
}

// scenario returns the load of a named scenario.
func scenario(name string, devices, total int) (*load, error) {
	alert := func(seq int) bool { return seq%10 == 9 }
	l := &load{devices: devices, readings: total / devices, expect: alert}
	switch name {
	case "full":
	case "20k":
		l.rate = 20000
	case "qos1":
		l.qos, l.window = 1, max(1, 1000/devices)
	case "neighbour": // issue 21's bad neighbour: ten well-behaved devices, 10 s
		l.devices, l.rate, l.readings, l.neighbour = 10, 500, 500, true
	case "backlog": // 100k, as issue 12 measures it
		l.qos, l.window, l.backlog = 1, max(1, 1000/devices), true
		l.readings = 100000 / devices
	default:
		return nil, fmt.Errorf("unknown scenario %q", name)
	}
	return l, nil
}

// row is one run's figures.
type row struct {
	rate, loss, ratio float64
	dups              int
	p50, p99          time.Duration
	// CPU per reading and peak RSS of the engine (the gateway, or Mosquitto alone), and of
	// all the processes that carried the traffic (with Mosquitto's, via Mosquitto).
	cpuPerEvent, cpuAll time.Duration
	peakRSS, rssAll     int64 // bytes
	behind              time.Duration
}

func (r row) format(sys, round string) string {
	cpu := fmt.Sprintf("%.1f", float64(r.cpuPerEvent)/float64(time.Microsecond))
	rss := fmt.Sprintf("%.1f MiB", float64(r.peakRSS)/(1<<20))
	if r.rssAll != r.peakRSS {
		cpu += fmt.Sprintf(" (%.1f)", float64(r.cpuAll)/float64(time.Microsecond))
		rss += fmt.Sprintf(" (%.0f)", float64(r.rssAll)/(1<<20))
	}
	s := fmt.Sprintf("%-14s %5s %9.1fk %6.2f%% %5d %9s %9s %-16s %-18s", sys, round, r.rate/1000, 100*r.loss, r.dups,
		r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), cpu, rss)
	if r.ratio > 0 {
		s += fmt.Sprintf(" %7.2f", r.ratio)
	}
	if r.behind > 100*time.Millisecond {
		s += fmt.Sprintf("  (devices fell %s behind schedule)", r.behind.Round(time.Millisecond))
	}
	return s
}

func median(rs []row) row {
	mid := func(f func(row) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return row{
		rate: mid(func(r row) float64 { return r.rate }), loss: mid(func(r row) float64 { return r.loss }),
		ratio:       mid(func(r row) float64 { return r.ratio }),
		dups:        int(mid(func(r row) float64 { return float64(r.dups) })),
		p50:         time.Duration(mid(func(r row) float64 { return float64(r.p50) })),
		p99:         time.Duration(mid(func(r row) float64 { return float64(r.p99) })),
		cpuPerEvent: time.Duration(mid(func(r row) float64 { return float64(r.cpuPerEvent) })),
		cpuAll:      time.Duration(mid(func(r row) float64 { return float64(r.cpuAll) })),
		peakRSS:     int64(mid(func(r row) float64 { return float64(r.peakRSS) })),
		rssAll:      int64(mid(func(r row) float64 { return float64(r.rssAll) })),
	}
}

// run starts the system fresh in a temporary directory, runs the load through it, and
// stops it.
func run(sys, sc string, l *load, moongate, mosquitto string, inflight int, profile string) (row, error) {
	dir, err := os.MkdirTemp("", "moongate-e2e-")
	if err != nil {
		return row{}, err
	}
	defer os.RemoveAll(dir)
	var procs []*benchproc.Proc
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	var brokerAddr, filter string
	if sys == "mosquitto" || sys == "via-mosquitto" {
		m, addr, err := startMosquitto(dir, mosquitto, inflight)
		if err != nil {
			return row{}, err
		}
		procs = append(procs, m)
		brokerAddr = addr
	}
	var gw *benchproc.Proc
	var api string
	switch sys {
	case "mosquitto":
		filter = "sensors/#"
		l = &load{devices: l.devices, readings: l.readings, rate: l.rate, inStep: l.inStep, qos: l.qos, window: l.window,
			expect: func(int) bool { return true }}
	case "embedded", "via-mosquitto":
		filter = "alerts/#"
		broker := "embedded"
		embedded := benchproc.FreeAddr()
		if sys == "via-mosquitto" {
			broker = "tcp://" + brokerAddr
		} else {
			brokerAddr = embedded
		}
		api = benchproc.FreeAddr()
		gw, err = startGateway(dir, moongate, broker, embedded, api, l.qos, l.neighbour)
		if err != nil {
			return row{}, err
		}
		procs = append(procs, gw)
	default:
		return row{}, fmt.Errorf("unknown system %q", sys)
	}

	rc, err := newReceiver(brokerAddr, filter, l)
	if err != nil {
		return row{}, fmt.Errorf("receiver: %w", err)
	}
	if err := probe(brokerAddr, rc); err != nil {
		return row{}, err
	}
	var restart func() (time.Time, error)
	if l.backlog {
		// The gateway's session and subscription exist: stop it, let Mosquitto queue the
		// readings, and start it again on them.
		gw.Stop()
		procs = slices.DeleteFunc(procs, func(p *benchproc.Proc) bool { return p == gw })
		restart = func() (time.Time, error) {
			t := time.Now()
			gw, err := startGateway(dir, moongate, "tcp://"+brokerAddr, benchproc.FreeAddr(), api, l.qos, false)
			if err == nil {
				procs = append(procs, gw)
			}
			return t, err
		}
	}
	cpu0 := make([]time.Duration, len(procs))
	for i, p := range procs {
		cpu0[i] = p.CPU()
	}
	profiled := make(chan error, 1)
	if profile != "" && api != "" {
		go func() { profiled <- fetchProfile("http://"+api+"/debug/pprof/profile?seconds=2", profile) }()
	} else {
		profiled <- nil
	}
	stopAttack := func() {}
	if l.attack {
		if stopAttack, err = attack(brokerAddr); err != nil {
			return row{}, fmt.Errorf("attack: %w", err)
		}
	}
	start, behind, err := l.publish(brokerAddr)
	stopAttack()
	if err != nil {
		return row{}, fmt.Errorf("devices: %w", err)
	}
	if restart != nil {
		if start, err = restart(); err != nil { // the drain runs from the gateway's start
			return row{}, err
		}
		cpu0 = append(cpu0, 0)
	}
	res := rc.wait(5 * time.Second)
	if err := <-profiled; err != nil {
		return row{}, fmt.Errorf("profile: %w", err)
	}
	sent := l.devices * l.readings
	r := row{
		loss:   1 - float64(res.received)/float64(res.expected),
		dups:   res.dups,
		behind: behind,
	}
	for i, p := range procs { // the engine is the last: the gateway, or Mosquitto alone
		cpu, rss := (p.CPU()-cpu0[i])/time.Duration(sent), p.PeakRSS()
		r.cpuAll += cpu
		r.rssAll += rss
		if i == len(procs)-1 {
			r.cpuPerEvent, r.peakRSS = cpu, rss
		}
	}
	if !res.last.IsZero() {
		r.rate = float64(sent) / res.last.Sub(start).Seconds()
	}
	if n := len(res.latencies); n > 0 {
		slices.Sort(res.latencies)
		r.p50, r.p99 = res.latencies[n/2], res.latencies[n*99/100]
	}
	return r, nil
}

// probe publishes readings of device "probe" until one comes out at the receiver: the
// system is subscribed end to end.
func probe(addr string, rc *receiver) error {
	c, _, err := dial(addr, "bench-probe")
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer c.Close()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if err := probeOnce(c); err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
		if rc.probed.Load() {
			return nil
		}
	}
	return fmt.Errorf("no probe reading came out in 30 s")
}

// startMosquitto runs Mosquitto on a free port with queues that never drop (the receiver
// is slower than the devices in a burst) and the given in-flight window.
func startMosquitto(dir, bin string, inflight int) (*benchproc.Proc, string, error) {
	addr := benchproc.FreeAddr()
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages %d\n", port, inflight)
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	p, err := benchproc.Start(dir, "mosquitto", bin, "-c", path)
	if err != nil {
		return nil, "", err
	}
	if err := benchproc.WaitListening(p, addr); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, addr, nil
}

// The function of the workload: an alert with the reading's device, seq and ts. At QoS 1
// it also counts the device's readings in KV, so that every invocation commits (fsync)
// before its reading is acknowledged.
const function = `
local qos = tonumber(env.QOS)
function handle(event)
  local r = event.payload
  if qos > 0 then
    kv.incr("readings/" .. r.device)
  end
  if r.temp > 30 then
    mqtt.publish("alerts/" .. r.device, {device = r.device, seq = r.seq, ts = r.ts}, {qos = qos})
  end
end
`

// runaway is the careless function of the neighbour scenario: it triggers itself and
// writes 10 keys of 900 B each time.
const runaway = `
function handle(event)
  for i = 1, 10 do
    kv.set("junk/" .. event.id .. "/" .. i, string.rep("x", 900))
  end
  mqtt.publish("loop/again", "again")
end
`

// startGateway starts the gateway on the workload's function; with neighbour, the
// gateway keeps its default bounds and has the runaway function deployed too.
func startGateway(dir, bin, broker, embedded, api string, qos byte, neighbour bool) (*benchproc.Proc, error) {
	loops, extra := "  loops: {publish_rate: -1} # the alerts of a full-speed burst exceed the default 2000/s\n", ""
	if neighbour {
		loops, extra = "", "  - {name: runaway, source: runaway.lua, triggers: [\"mqtt:loop/#\"]}\n"
		if err := os.WriteFile(filepath.Join(dir, "runaway.lua"), []byte(runaway), 0o644); err != nil {
			return nil, err
		}
	}
	conf := fmt.Sprintf(`gateway:
  id: bench
  data_dir: ./data
  console: {listen: %s}
  debug: {pprof: true}
%smqtt:
  broker: %s
  embedded: {listen: %s}
functions:
  - name: f
    source: alert.lua
    triggers: ["mqtt:sensors/+/temp@%d"]
    env: {QOS: "%d"}
%s`, api, loops, broker, embedded, qos, qos, extra)
	// A build from before gateway.loops refuses the key (and has no such bound): so
	// that builds across the change compare, it runs without the line.
	if err := os.WriteFile(filepath.Join(dir, "moongate.yaml"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if loops != "" {
		check := exec.Command(bin, "check", "-c", "moongate.yaml")
		check.Dir = dir
		if out, err := check.CombinedOutput(); err != nil && strings.Contains(string(out), "gateway.loops: unknown key") {
			conf = strings.Replace(conf, loops, "", 1)
			if err := os.WriteFile(filepath.Join(dir, "moongate.yaml"), []byte(conf), 0o644); err != nil {
				return nil, err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "alert.lua"), []byte(function), 0o644); err != nil {
		return nil, err
	}
	p, err := benchproc.Start(dir, "moongate", bin, "run", "-c", "moongate.yaml")
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + api + "/api/v1/status")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("gateway did not start:\n%s", p.Tail())
		}
	}
	return p, nil
}

func fetchProfile(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
