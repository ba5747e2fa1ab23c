//go:build unix

package sensors

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
)

// BenchmarkEdgeLatency measures the software path from an edge (a send on
// a gpiotest pin's EdgesChan, which is what the kernel's line event is to
// a real pin) to the handler: WaitForEdge returning, the watcher's
// debounce, the queue and the dispatcher goroutine. It reports p50 and
// p99 in microseconds.
//
//	go test -run '^$' -bench EdgeLatency -benchtime 20000x ./sensors/
func BenchmarkEdgeLatency(b *testing.B) {
	p := newPin("GPIO17")
	m, err := New(map[string]Config{"button": {Driver: DriverGPIO, Pin: "GPIO17"}},
		Options{Opener: &fakeOpener{pins: map[string]gpio.PinIO{"GPIO17": p}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Watch(Watch{Pin: "GPIO17", Edge: EdgeBoth, Debounce: 0}); err != nil {
		b.Fatal(err)
	}
	got := make(chan time.Time, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx, HandlerFuncs{Edge: func(Edge) { got <- time.Now() }}) }()
	defer func() { cancel(); <-done }()

	lat := make([]time.Duration, 0, b.N)
	level := gpio.Low
	b.ResetTimer()
	for range b.N {
		level = !level
		start := time.Now()
		p.EdgesChan <- level
		lat = append(lat, (<-got).Sub(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkIdleCPU runs a Manager as the gateway would on a quiet Pi: four
// sensors polled every second (two sim, a BME280 and an SHT3x on i2ctest
// playback, with their real conversion waits) and one GPIO watch with no
// edges, for MOONGATE_CPU_SECONDS (default 10) of wall time, and reports
// the process's CPU time (user + system, from getrusage) as a percentage
// of one core.
//
//	go test -run '^$' -bench IdleCPU -benchtime 1x ./sensors/
func BenchmarkIdleCPU(b *testing.B) {
	secs := 10
	if s, err := strconv.Atoi(os.Getenv("MOONGATE_CPU_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	for range b.N {
		reads := 2*secs + 5
		bus := &addrBus{devs: map[uint16]*i2ctest.Playback{
			0x76: playback(bmeOps(0x76, reads)...),
			0x44: playback(shtOps(0x44, reads)...),
		}}
		m, err := New(map[string]Config{
			"kitchen": {Driver: DriverBME280, Every: time.Second},
			"bath":    {Driver: DriverSHT3x, Every: time.Second},
			"sim-1":   {Driver: DriverSim, Every: time.Second, Values: map[string]string{"temp": "20+5*sin(t/60)+noise(0.2)"}},
			"sim-2":   {Driver: DriverSim, Every: time.Second, Values: map[string]string{"hum": "50+10*square(t, 30)", "co2": "400+30*spike(0.05)"}},
			"button":  {Driver: DriverGPIO, Pin: "GPIO17", Pull: "up"},
		}, Options{
			Opener: &fakeOpener{buses: map[string]i2c.BusCloser{"1": bus}, pins: map[string]gpio.PinIO{"GPIO17": newPin("GPIO17")}},
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Watch(Watch{Pin: "button", Edge: EdgeFalling, Debounce: 50 * time.Millisecond}); err != nil {
			b.Fatal(err)
		}
		readings := 0
		h := HandlerFuncs{Reading: func(Reading) { readings++ }}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
		before, start := cpuTime(b), time.Now()
		if err := m.Run(ctx, h); err != nil {
			b.Fatal(err)
		}
		cpu, wall := cpuTime(b)-before, time.Since(start)
		cancel()
		m.Close()
		if readings < 4*(secs-2) {
			b.Fatalf("%d readings in %ds, want about %d", readings, secs, 4*secs)
		}
		b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu-%")
		b.ReportMetric(float64(readings), "readings")
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
