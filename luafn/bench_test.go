package luafn

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The benchmarks behind the figures of issue 3:
//
//	go test -run XXX -bench . -benchtime 2s ./luafn
const smallHandler = `
local threshold = tonumber(env.THRESHOLD) or 30
function handle(event)
  local p = event.payload
  if p.temp > threshold then
    return {alert = true, device = p.device, temp = p.temp}
  end
  return {ok = true, seq = p.seq}
end`

// fiveFields is an MQTT event with a 5-field JSON payload.
func fiveFields() *Event {
	return &Event{ID: "01JD5K2Y8N6F3QZ1X0T7W4R9BM", Source: "mqtt", TS: 1732400000000, Topic: "sensors/kitchen/temp", QoS: 1,
		Payload: []byte(`{"device":"esp32-kitchen","temp":31.5,"hum":40,"ok":true,"seq":1234}`)}
}

func deployBench(b *testing.B, src string, unbounded bool) *Function {
	b.Helper()
	p, err := Compile(Spec{Name: "bench", Source: src, Env: map[string]string{"THRESHOLD": "30"}})
	if err != nil {
		b.Fatal(err)
	}
	p.unbounded = unbounded
	f, err := New(p, Host{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.Close)
	return f
}

// BenchmarkInvoke is a warm invocation including the event's conversion (and the
// payload's JSON decoding) and the result's. It reports the p99 latency of the run.
func BenchmarkInvoke(b *testing.B) {
	f := deployBench(b, smallHandler, false)
	ev := fiveFields()
	ctx := context.Background()
	lat := make([]time.Duration, 0, 1<<20)
	b.ReportAllocs()
	cpu := startCPU(b)
	for b.Loop() {
		start := time.Now()
		if _, err := f.Invoke(ctx, ev); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(start))
		}
	}
	cpu.report()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
}

// BenchmarkBoundsOverhead compares the same warm invocation with every bound on and
// with none (no hook, no watchdog): the target is at least 85% of the rate.
func BenchmarkBoundsOverhead(b *testing.B) {
	for _, c := range []struct {
		name      string
		unbounded bool
	}{{"bounds", false}, {"none", true}} {
		b.Run(c.name, func(b *testing.B) {
			f := deployBench(b, smallHandler, c.unbounded)
			ev := fiveFields()
			cpu := startCPU(b)
			for b.Loop() {
				if _, err := f.Invoke(context.Background(), ev); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report()
		})
	}
}

// BenchmarkBoundsOverheadLoop is the same comparison on a compute loop, where the
// per-instruction hook weighs most.
func BenchmarkBoundsOverheadLoop(b *testing.B) {
	for _, c := range []struct {
		name      string
		unbounded bool
	}{{"bounds", false}, {"none", true}} {
		b.Run(c.name, func(b *testing.B) {
			f := deployBench(b, `function handle() local s = 0 for i = 1, 1000 do s = s + i % 7 end return s end`, c.unbounded)
			cpu := startCPU(b)
			for b.Loop() {
				if _, err := f.Invoke(context.Background(), &Event{}); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report()
		})
	}
}

// source200 is a 200-line function: helpers, tables, string work.
func source200() string {
	var s strings.Builder
	s.WriteString("local M = {}\n")
	for i := 0; i < 24; i++ {
		fmt.Fprintf(&s, `function M.f%d(x, y)
  local t = {a = x, b = y, n = %d}
  if t.a > t.b then
    return string.format("%%s-%%d", "k", t.n) .. tostring(x)
  end
  return t.a + t.b * %d
end
`, i, i, i)
	}
	s.WriteString(`function handle(event)
  local p = event.payload
  local out = {}
`)
	for i := 0; i < 24; i++ {
		fmt.Fprintf(&s, "  out[%d] = M.f%d(p.temp or 0, %d)\n", i+1, i, i)
	}
	s.WriteString("  return out\nend\n")
	return s.String()
}

// BenchmarkColdStart is deploy to first result: Compile, New (warm VM created, chunk
// run), first Invoke, for a 200-line function.
func BenchmarkColdStart(b *testing.B) {
	src := source200()
	if n := strings.Count(src, "\n"); n < 195 || n > 205 {
		b.Fatalf("source has %d lines", n)
	}
	ev := fiveFields()
	for b.Loop() {
		p, err := Compile(Spec{Name: "cold", Source: src})
		if err != nil {
			b.Fatal(err)
		}
		f, err := New(p, Host{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Invoke(context.Background(), ev); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkMemory reports the heap held by warm VMs: per VM (50 VMs of one program),
// and for 100 deployed functions of 200 lines, each compiled on its own with one warm VM
// that has run once. ns/op is the time to create them.
func BenchmarkMemory(b *testing.B) {
	src := source200()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	b.Run("vm", func(b *testing.B) {
		p, err := Compile(Spec{Name: "f", Source: src, Limits: Limits{Concurrency: 50}})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			before := heap()
			f, err := New(p, Host{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(heap()-before)/50, "bytes/vm")
			f.Close()
		}
	})
	b.Run("100-functions", func(b *testing.B) {
		for b.Loop() {
			before := heap()
			fns := make([]*Function, 100)
			for i := range fns {
				p, err := Compile(Spec{Name: fmt.Sprintf("f%d", i), Source: src})
				if err != nil {
					b.Fatal(err)
				}
				if fns[i], err = New(p, Host{}); err != nil {
					b.Fatal(err)
				}
				if _, err := fns[i].Invoke(context.Background(), fiveFields()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(heap()-before)/(1<<20), "MiB")
			for _, f := range fns {
				f.Close()
			}
		}
	})
}

// BenchmarkTimeoutStop reports how long after its 10ms timeout a busy loop is stopped:
// the median and the worst of the run.
func BenchmarkTimeoutStop(b *testing.B) {
	const timeout = 10 * time.Millisecond
	p, err := Compile(Spec{Name: "loop", Source: "function handle() while true do end end", Limits: Limits{Timeout: timeout}})
	if err != nil {
		b.Fatal(err)
	}
	f, err := New(p, Host{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var over []time.Duration
	for b.Loop() {
		res, _ := f.Invoke(context.Background(), &Event{})
		over = append(over, res.Duration-timeout)
	}
	slices.Sort(over)
	b.ReportMetric(float64(over[len(over)/2].Microseconds()), "p50-overshoot-us")
	b.ReportMetric(float64(over[len(over)-1].Microseconds()), "max-overshoot-us")
}

// cpuMeter reports the process's CPU time per operation (user + system, GC included):
// on a shared machine it is steadier than wall time, and 1e9 / cpu-ns is the rate one
// core sustains.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
}

func startCPU(b *testing.B) cpuMeter { return cpuMeter{b: b, start: cpuTime()} }

func (m cpuMeter) report() {
	m.b.ReportMetric(float64(cpuTime()-m.start)/float64(m.b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
