package sensors

import (
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jonboulle/clockwork"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
)

func TestI2CDriversThroughManager(t *testing.T) {
	devs := map[uint16]*i2ctest.Playback{
		0x76: playback(bmeOps(0x76, 1)...),
		0x44: playback(shtOps(0x44, 1)...),
		0x23: playback(bhOps(0x23, 1)...),
		0x48: playback(adsOps(0x48, 1)...),
	}
	fc := clockwork.NewFakeClock()
	m, err := New(map[string]Config{
		// Every 10s: all four first polls (within 2s) finish before any second one.
		"kitchen": {Driver: DriverBME280, Bus: "1", Every: 10 * time.Second},
		"bath":    {Driver: DriverSHT3x, Bus: "2", Every: 10 * time.Second},
		"light":   {Driver: DriverBH1750, Bus: "3", Every: 10 * time.Second},
		"adc":     {Driver: DriverADS1115, Bus: "4", Every: 10 * time.Second, Channels: []int{0, 3}, Range: 4.096},
	}, Options{Opener: &fakeOpener{buses: map[string]i2c.BusCloser{
		// One bus per sensor here, so that no poll goroutine waits on a bus
		// lock instead of the clock; TestSharedBusSerialised shares one.
		"1": &addrBus{devs: devs}, "2": &addrBus{devs: devs}, "3": &addrBus{devs: devs}, "4": &addrBus{devs: devs},
	}}, Clock: fc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	run(t, m, c)
	got := map[string]Reading{}
	// Four poll goroutines, each always waiting on the clock (for its next
	// poll or for its driver's conversion) unless it is running.
	drive(t, fc, 4, 5*time.Millisecond, 5*time.Second, func() bool {
		for {
			select {
			case r := <-c.readings:
				got[r.Sensor] = r
			default:
				return len(got) == 4
			}
		}
	})
	want := map[string]map[string]float64{
		"kitchen": {"temp": 23.72, "pressure": 1009.426953125, "humidity": 65.3056},
		"bath":    {"temp": 25, "humidity": 50.0008},
		"light":   {"lux": 28066.667},
		"adc":     {"a0": 2.048, "a3": -125e-6},
	}
	for name, values := range want {
		r := got[name]
		if len(r.Values) != len(values) {
			t.Errorf("%s: values %v, want keys of %v", name, r.Values, values)
		}
		for k, v := range values {
			if math.Abs(r.Values[k]-v) > 1e-3*math.Max(1, math.Abs(v)) && math.Abs(r.Values[k]-v) > 1e-9 {
				t.Errorf("%s.%s = %v, want %v", name, k, r.Values[k], v)
			}
		}
	}
	for addr, p := range devs {
		if err := p.Close(); err != nil {
			t.Errorf("device %#x: %v", addr, err)
		}
	}
	for _, st := range m.Status() {
		if st.State != StateOK || st.Reads != 1 || st.Errors != 0 || st.LastReading.IsZero() {
			t.Errorf("status %+v", st)
		}
	}
}

// recordingBus is an addrBus that records which device each transfer went
// to, and how many transfers were in flight at once.
type recordingBus struct {
	addrBus
	mu    sync.Mutex
	addrs []uint16
}

func (b *recordingBus) Tx(addr uint16, w, r []byte) error {
	b.mu.Lock()
	b.addrs = append(b.addrs, addr)
	b.mu.Unlock()
	return b.addrBus.Tx(addr, w, r)
}

// Sensors on one bus take turns: one driver's reading (start a conversion,
// wait, read it back) is never interleaved with another's.
func TestSharedBusSerialised(t *testing.T) {
	const reads = 40
	bus := &recordingBus{addrBus: addrBus{devs: map[uint16]*i2ctest.Playback{
		0x76: playback(bmeOps(0x76, reads)...),
		0x44: playback(shtOps(0x44, reads)...),
		0x45: playback(shtOps(0x45, reads)...),
		0x48: playback(adsOps(0x48, reads)...),
	}}}
	cfgs := map[string]Config{
		"kitchen": {Driver: DriverBME280, Every: 100 * time.Millisecond},
		"bath":    {Driver: DriverSHT3x, Every: 100 * time.Millisecond},
		"cellar":  {Driver: DriverSHT3x, Addr: 0x45, Every: 100 * time.Millisecond},
		"adc":     {Driver: DriverADS1115, Every: 100 * time.Millisecond, Channels: []int{0, 3}, Range: 4.096},
	}
	m, err := New(cfgs, Options{Opener: &fakeOpener{buses: map[string]i2c.BusCloser{"1": bus}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	run(t, m, c)
	got := map[string]int{}
	for len(got) < 4 || got["kitchen"] < 3 || got["bath"] < 3 || got["cellar"] < 3 || got["adc"] < 3 {
		select {
		case r := <-c.readings:
			got[r.Sensor]++
		case <-time.After(10 * time.Second):
			t.Fatalf("readings %v", got)
		}
	}
	bus.mu.Lock()
	defer bus.mu.Unlock()
	perRead := map[uint16]int{0x76: 3, 0x44: 2, 0x45: 2, 0x48: 6}
	// Skip the probes New made (one sensor after another), then walk the
	// readings: each must be its device's transfers back to back.
	opens := map[uint16]int{0x76: 3, 0x44: 2, 0x45: 2, 0x48: 1}
	i := 0
	for _, n := range opens {
		i += n
	}
	addrs := bus.addrs[i:]
	for len(addrs) > 0 {
		a := addrs[0]
		n := min(perRead[a], len(addrs))
		for j := range n {
			if addrs[j] != a {
				t.Fatalf("transfers interleaved: %#x's reading broken by %#x in %x", a, addrs[j], addrs[:n])
			}
		}
		addrs = addrs[n:]
	}
}

func TestDS18B20ThroughManager(t *testing.T) {
	w1 := os.DirFS("ds18b20/testdata/w1")
	fc := clockwork.NewFakeClock()
	m, err := New(map[string]Config{
		"tank": {Driver: DriverDS18B20, Device: "28-000005e2fdc3", Every: time.Minute},
	}, Options{W1: w1, Clock: fc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	run(t, m, c)
	var r Reading
	drive(t, fc, 1, 100*time.Millisecond, 10*time.Second, func() bool {
		select {
		case r = <-c.readings:
			return true
		default:
			return false
		}
	})
	if r.Sensor != "tank" || r.Values["temp"] != -10.125 {
		t.Errorf("got %+v", r)
	}

	// Several devices and none named: the error lists them.
	_, err = New(map[string]Config{"tank": {Driver: DriverDS18B20}}, Options{W1: w1})
	if err == nil || !strings.Contains(err.Error(), "sensor tank: 5 DS18B20s under /sys/bus/w1/devices (28-") {
		t.Errorf("got %v", err)
	}
	// Exactly one: it is used.
	one := fstest.MapFS{"28-0316a2794cff/w1_slave": {Data: []byte("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n")}}
	if _, err := New(map[string]Config{"tank": {Driver: DriverDS18B20}}, Options{W1: one}); err != nil {
		t.Error(err)
	}
}

// Missing hardware through the real host opener, which is what runs on a
// Pi: this machine has no I²C bus 1 and no GPIO17.
func TestMissingHardwareNamesIt(t *testing.T) {
	cfgs := map[string]Config{
		"kitchen": {Driver: DriverBME280, Bus: "1", Addr: 0x76, Every: 10 * time.Second},
		"button":  {Driver: DriverGPIO, Pin: "GPIO17", Pull: "up"},
		"tank":    {Driver: DriverDS18B20},
		"sim-1":   {Driver: DriverSim, Values: map[string]string{"temp": "20"}},
	}
	_, err := New(cfgs, Options{W1: fstest.MapFS{}})
	if err == nil {
		t.Skip("this host has I2C bus 1 and GPIO17")
	}
	msg := err.Error()
	for _, want := range []string{
		"sensor kitchen: i2c bus 1 not found (is I2C enabled in raspi-config?",
		"host i2c drivers loaded:",
		"sensor button: gpio pin GPIO17 not found",
		"host gpio drivers loaded:",
		"sensor tank: no DS18B20 (28-*) under /sys/bus/w1/devices (is dtoverlay=w1-gpio",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "sim-1") {
		t.Errorf("the sim sensor is not missing:\n%s", msg)
	}
}

func TestMissingDeviceOnBus(t *testing.T) {
	cases := []struct {
		cfg  Config
		bus  i2c.BusCloser
		want string
	}{
		{Config{Driver: DriverBME280}, playback(),
			"sensor kitchen: bme280 at i2c bus 1 address 0x76: bmx280: read chip id: "},
		{Config{Driver: DriverBME280}, playback(bmeOpenOps(0x76, 0x58)...),
			"sensor kitchen: bme280 at i2c bus 1 address 0x76 is a BMP280, which has no humidity sensor; use driver: bmp280"},
		{Config{Driver: DriverSHT3x, Addr: 0x45}, &addrBus{},
			"sensor kitchen: sht3x at i2c bus 1 address 0x45: sht3x: read status: no device answers (NACK) (check the wiring and the address; i2cdetect -y 1 lists the devices that answer)"},
		{Config{Driver: DriverBH1750, Bus: "2"}, playback(),
			"sensor kitchen: i2c bus 2 not found (fake)"},
	}
	for _, c := range cases {
		_, err := New(map[string]Config{"kitchen": c.cfg}, Options{Opener: &fakeOpener{buses: map[string]i2c.BusCloser{"1": c.bus}}})
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: got %v\nwant prefix %q", c.cfg, err, c.want)
		}
	}
}

// safeOpener is a fakeOpener whose hardware can appear while the manager
// runs.
type safeOpener struct {
	mu sync.Mutex
	fakeOpener
}

func (o *safeOpener) OpenI2C(name string) (i2c.BusCloser, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fakeOpener.OpenI2C(name)
}

func TestAllowMissingHardware(t *testing.T) {
	logs := &logRecorder{}
	fc := clockwork.NewFakeClock()
	opener := &safeOpener{}
	m, err := New(map[string]Config{
		"kitchen": {Driver: DriverBME280, Every: time.Second},
		"button":  {Driver: DriverGPIO, Pin: "GPIO17", Pull: "up"},
		"relay":   {Driver: DriverGPIO, Pin: "GPIO27", Mode: ModeOut},
		"sim-1":   {Driver: DriverSim, Every: time.Second, Values: map[string]string{"temp": "20+t"}},
	}, Options{AllowMissingHardware: true, Opener: opener, Clock: fc, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	if n := logs.count("sensor hardware missing; running without it"); n != 3 {
		t.Errorf("%d missing-hardware logs, want 3 (kitchen, button, relay)", n)
	}
	st := map[string]SensorStatus{}
	for _, s := range m.Status() {
		st[s.Name] = s
	}
	if s := st["kitchen"]; s.State != StateMissing || !strings.Contains(s.LastError, "i2c bus 1 not found") {
		t.Errorf("kitchen %+v", s)
	}
	if s := st["button"]; s.State != StateMissing || !strings.Contains(s.LastError, "GPIO17") {
		t.Errorf("button %+v", s)
	}
	if err := m.Watch(Watch{Pin: "GPIO17", Edge: EdgeFalling}); err != nil {
		t.Errorf("Watch on a missing pin: %v", err)
	}
	if err := m.WritePin("relay", 1); err == nil || !strings.Contains(err.Error(), "gpio pin GPIO27 is not available: sensor relay: gpio pin GPIO27 not found") {
		t.Errorf("WritePin on a missing pin: %v", err)
	}
	if _, err := m.ReadPin("GPIO17"); err == nil {
		t.Error("ReadPin on a missing pin succeeded")
	}

	c := newCollector()
	run(t, m, c)
	// The rest runs: the sim sensor reads.
	drive(t, fc, 2, 100*time.Millisecond, 10*time.Second, func() bool { return len(c.readings) > 0 })
	if r := <-c.readings; r.Sensor != "sim-1" {
		t.Errorf("reading from %s", r.Sensor)
	}

	// The BME280 is plugged in: the next retry finds it, and says so once.
	opener.mu.Lock()
	opener.buses = map[string]i2c.BusCloser{"1": playback(bmeOps(0x76, 1)...)}
	opener.mu.Unlock()
	kitchen := func() bool {
		for {
			select {
			case r := <-c.readings:
				if r.Sensor == "kitchen" {
					return true
				}
			default:
				return false
			}
		}
	}
	drive(t, fc, 2, 100*time.Millisecond, 10*time.Minute, kitchen)
	if n := logs.count("sensor recovered"); n != 1 {
		t.Errorf("%d recovery logs, want 1", n)
	}
	if n := logs.total(); n != 4 {
		t.Errorf("%d log records in all, want 4 (3 missing, 1 recovered)", n)
	}
}

// A sensor that keeps failing is logged once, polled less and less often,
// and logged once more when it recovers.
func TestFailingSensorBacksOffAndLogsOnce(t *testing.T) {
	logs := &logRecorder{}
	fc := clockwork.NewFakeClock()
	// 1/0 is not a reading; from t=600 s on, the value is 1.
	m, err := New(map[string]Config{
		"flaky": {Driver: DriverSim, Every: time.Second, Values: map[string]string{"x": "1/step(t-600)"}},
	}, Options{Clock: fc, Logger: slog.New(logs), Rand: rand.New(rand.NewPCG(1, 1))})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	run(t, m, c)
	var polls []time.Time // of failed polls, from the status
	var lastErrors uint64
	drive(t, fc, 1, 50*time.Millisecond, 20*time.Minute, func() bool {
		st := m.Status()[0]
		if st.Errors != lastErrors {
			lastErrors = st.Errors
			polls = append(polls, fc.Now())
		}
		return len(c.readings) > 0
	})
	st := m.Status()[0]
	if n := logs.count("sensor failing; polling less often until it recovers"); n != 1 {
		t.Errorf("%d failure logs, want 1", n)
	}
	if n := logs.count("sensor recovered"); n != 1 {
		t.Errorf("%d recovery logs, want 1", n)
	}
	if logs.total() != 2 {
		t.Errorf("%d log records, want 2", logs.total())
	}
	// Polled every second, 600 s of failure would be 600 failed polls. With
	// backoff (1 s, 1 s, then 2, 4, 8 ... 256, 300 s) it is a dozen.
	if len(polls) < 5 || len(polls) > 15 {
		t.Errorf("%d failed polls in 600 s: %v", len(polls), polls)
	}
	for i := 3; i < len(polls); i++ {
		if gap := polls[i].Sub(polls[i-1]); gap < polls[i-1].Sub(polls[i-2]) {
			t.Errorf("poll gap shrank while failing: %v", polls)
		}
	}
	if st.State != StateOK || st.ConsecutiveFailures != 0 || st.Reads != 1 || !strings.Contains(st.LastError, "not a finite number") {
		t.Errorf("status after recovery %+v", st)
	}
}

func TestBusErrorsRetriedAndCounted(t *testing.T) {
	fc := clockwork.NewFakeClock()
	bus := &flakyBus{inner: playback(bmeOps(0x76, 3)...)}
	m, err := New(map[string]Config{"kitchen": {Driver: DriverBME280, Every: time.Second}},
		Options{Opener: &fakeOpener{buses: map[string]i2c.BusCloser{"1": bus}}, Clock: fc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	run(t, m, c)
	status := func() SensorStatus { return m.Status()[0] }

	// One glitch: the retry succeeds.
	bus.failNext.Store(1)
	drive(t, fc, 1, 5*time.Millisecond, 5*time.Second, func() bool { return len(c.readings) == 1 })
	if st := status(); st.Reads != 1 || st.Retries != 1 || st.Errors != 1 || st.State != StateOK {
		t.Errorf("after a glitch: %+v", st)
	}
	// A dead bus: each poll tries three times.
	bus.failing.Store(true)
	drive(t, fc, 1, 5*time.Millisecond, 10*time.Second, func() bool { return status().ConsecutiveFailures == 2 })
	if st := status(); st.Errors != 1+6 || st.Retries != 1+4 || st.State != StateFailing || !strings.Contains(st.LastError, "remote I/O error") {
		t.Errorf("after two failed polls: %+v", st)
	}
	bus.failing.Store(false)
	drive(t, fc, 1, 5*time.Millisecond, 10*time.Second, func() bool { return len(c.readings) == 2 })
	if st := status(); st.State != StateOK || st.ConsecutiveFailures != 0 {
		t.Errorf("after recovery: %+v", st)
	}
}

func TestPollScheduleHasJitter(t *testing.T) {
	fc := clockwork.NewFakeClock()
	start := fc.Now()
	cfgs := map[string]Config{}
	for _, n := range []string{"a", "b", "c", "d"} {
		cfgs[n] = Config{Driver: DriverSim, Every: time.Second, Values: map[string]string{"v": "t"}}
	}
	m, err := New(cfgs, Options{Clock: fc, Rand: rand.New(rand.NewPCG(7, 7))})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	run(t, m, c)
	times := map[string][]time.Time{}
	drive(t, fc, 4, time.Millisecond, 20*time.Second, func() bool {
		for len(c.readings) > 0 {
			r := <-c.readings
			times[r.Sensor] = append(times[r.Sensor], r.TS)
			if v := r.Values["v"]; v != r.TS.Sub(start).Seconds() {
				t.Errorf("%s: t = %v at %s", r.Sensor, v, r.TS.Sub(start))
			}
		}
		for _, n := range []string{"a", "b", "c", "d"} {
			if len(times[n]) < 10 {
				return false
			}
		}
		return true
	})
	firsts := map[time.Duration]bool{}
	for n, ts := range times {
		first := ts[0].Sub(start)
		if first >= time.Second {
			t.Errorf("%s: first poll after %s", n, first)
		}
		firsts[first] = true
		gaps := map[time.Duration]bool{}
		for i := 1; i < len(ts); i++ {
			gap := ts[i].Sub(ts[i-1])
			if gap <= 900*time.Millisecond || gap >= 1100*time.Millisecond {
				t.Errorf("%s: gap %s outside 1s ± 10%%", n, gap)
			}
			gaps[gap] = true
		}
		if len(gaps) < 3 {
			t.Errorf("%s: gaps %v show no jitter", n, gaps)
		}
	}
	if len(firsts) != 4 {
		t.Errorf("first polls %v: sensors start in step", firsts)
	}
}

func TestNewRejectsBadConfigAtOnce(t *testing.T) {
	_, err := New(map[string]Config{
		"a": {Driver: "nope"},
		"b": {Driver: DriverGPIO, Pin: "GPIO4"},
		"c": {Driver: DriverGPIO, Pin: "GPIO4", Mode: ModeOut},
		"d": {Driver: DriverSim},
	}, Options{Opener: &fakeOpener{}})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`sensor a: driver: unknown driver "nope"`, "sensor c: pin GPIO4 is already used by sensor b", "sensor d: values: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Error("no *FieldError inside")
	}
}

func TestDriverPanicIsAnError(t *testing.T) {
	// A bus that panics, as i2ctest.Playback does by default on a surprise.
	bus := &i2ctest.Playback{Ops: bmeOpenOps(0x76, 0x60)}
	fc := clockwork.NewFakeClock()
	m, err := New(map[string]Config{"kitchen": {Driver: DriverBME280, Every: time.Second}},
		Options{Opener: &fakeOpener{buses: map[string]i2c.BusCloser{"1": bus}}, Clock: fc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	run(t, m, newCollector())
	drive(t, fc, 1, 10*time.Millisecond, 10*time.Second, func() bool { return m.Status()[0].Errors > 0 })
	if st := m.Status()[0]; !strings.Contains(st.LastError, "driver bme280 panicked") {
		t.Errorf("status %+v", st)
	}
}
