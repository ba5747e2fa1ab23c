package sensors

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The sensors: section of SPEC §3, plus one of each other driver.
const specYAML = `
kitchen: {driver: bme280, bus: "1", addr: 0x76, every: 10s}
button:  {driver: gpio, pin: GPIO17, pull: up}
sim-1:   {driver: sim, every: 1s, values: {temp: "20+5*sin(t/60)"}}
relay:   {driver: gpio, pin: GPIO27, mode: out, initial: 1}
adc:     {driver: ads1115, addr: 0x48, channels: [0, 3], range: 4.096}
tank:    {driver: ds18b20, device: 28-0316a2794cff, every: 30s}
`

func TestConfigDecodesFromYAML(t *testing.T) {
	var cfgs map[string]Config
	dec := yaml.NewDecoder(strings.NewReader(specYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&cfgs); err != nil {
		t.Fatal(err)
	}
	k := cfgs["kitchen"]
	if k.Driver != DriverBME280 || k.Bus != "1" || k.Addr != 0x76 || k.Every != 10*time.Second {
		t.Errorf("kitchen = %+v", k)
	}
	if b := cfgs["button"]; b.Pin != "GPIO17" || b.Pull != "up" || b.every() != 0 {
		t.Errorf("button = %+v (every %s)", b, b.every())
	}
	if s := cfgs["sim-1"]; s.Values["temp"] != "20+5*sin(t/60)" || s.Every != time.Second {
		t.Errorf("sim-1 = %+v", s)
	}
	if r := cfgs["relay"]; !r.isOutput() || r.Initial != 1 {
		t.Errorf("relay = %+v", r)
	}
	if a := cfgs["adc"]; !slices.Equal(a.Channels, []int{0, 3}) || a.Range != 4.096 || a.every() != DefaultEvery {
		t.Errorf("adc = %+v", a)
	}
	for name, c := range cfgs {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		cfg  Config
		want []string // one FieldError each, "field: text"
	}{
		{Config{}, []string{"driver: required"}},
		{Config{Driver: "dht22"}, []string{`driver: unknown driver "dht22"`}},
		{Config{Driver: DriverBME280, Addr: 0x40}, []string{"addr: 0x40 is not an address a bme280 answers on (0x76, 0x77)"}},
		{Config{Driver: DriverBME280, Every: time.Millisecond}, []string{"every: 1ms is shorter than 100ms"}},
		{Config{Driver: DriverBME280, Pin: "GPIO4", Values: map[string]string{}}, []string{"pin: not used by driver bme280", "values: not used by driver bme280"}},
		{Config{Driver: DriverSHT3x, Addr: 0x44, Every: -time.Second}, []string{"every: must not be negative"}},
		{Config{Driver: DriverADS1115, Channels: []int{0, 4, 0}, Range: 5}, []string{"channels: channel 4 is not 0..3", "channels: channel 0 listed twice", "range: 5 is not one of"}},
		{Config{Driver: DriverBH1750, Addr: 0x5C}, nil},
		{Config{Driver: DriverDS18B20, Device: "10-000801b5e5d3"}, []string{`device: "10-000801b5e5d3" is not a DS18B20 id`}},
		{Config{Driver: DriverDS18B20, Device: "28-../../etc"}, []string{"device:"}},
		{Config{Driver: DriverDS18B20, Every: 500 * time.Millisecond}, []string{"every: 500ms is shorter than the 1s"}},
		{Config{Driver: DriverGPIO}, []string{"pin: required"}},
		{Config{Driver: DriverGPIO, Pin: "GPIO17", Pull: "sideways", Mode: "inout"}, []string{`pull: "sideways" is not up, down or none`, `mode: "inout" is not in or out`}},
		{Config{Driver: DriverGPIO, Pin: "GPIO27", Mode: ModeOut, Pull: "up", Initial: 2, Every: time.Second}, []string{"pull: only for inputs", "every: only for inputs", "initial: must be 0 or 1"}},
		{Config{Driver: DriverGPIO, Pin: "GPIO17", Initial: 1}, []string{"initial: only for mode: out"}},
		{Config{Driver: DriverGPIO, Pin: "GPIO17", Bus: "1"}, []string{"bus: not used by driver gpio"}},
		{Config{Driver: DriverSim}, []string{"values: required"}},
		{Config{Driver: DriverSim, Values: map[string]string{"temp": "20+", "hum": "50+x", "": "1"}}, []string{"values: empty value name", "values.hum: at offset 3: unknown name", "values.temp: at offset 3: unexpected end"}},
		{Config{Driver: DriverSim, Values: map[string]string{"v": "t"}, Every: time.Millisecond}, []string{"every: 1ms is shorter than 10ms"}},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		var got []string
		if err != nil {
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Errorf("%+v: %v is not a *FieldError", c.cfg, e)
				}
				got = append(got, e.Error())
			}
		}
		if len(got) != len(c.want) {
			t.Errorf("%+v: got %q, want %q", c.cfg, got, c.want)
			continue
		}
		for i := range got {
			if !strings.HasPrefix(got[i], c.want[i]) {
				t.Errorf("%+v: error %d = %q, want prefix %q", c.cfg, i, got[i], c.want[i])
			}
		}
	}
}

func TestParseWatch(t *testing.T) {
	cases := []struct {
		in   string
		want Watch
		err  string
	}{
		{"GPIO17:falling:50ms", Watch{Pin: "GPIO17", Edge: EdgeFalling, Debounce: 50 * time.Millisecond}, ""},
		{"GPIO17:rising", Watch{Pin: "GPIO17", Edge: EdgeRising}, ""},
		{"button", Watch{Pin: "button", Edge: EdgeBoth}, ""},
		{"GPIO17:up", Watch{}, `edge "up"`},
		{"GPIO17:both:fast", Watch{}, "debounce"},
		{"GPIO17:both:1m", Watch{}, "not within"},
		{"GPIO17:both:1ms:x", Watch{}, "want PIN"},
		{"", Watch{}, "want PIN"},
	}
	for _, c := range cases {
		w, err := ParseWatch(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseWatch(%q) = %v, want error containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || w != c.want {
			t.Errorf("ParseWatch(%q) = %+v, %v; want %+v", c.in, w, err, c.want)
		}
		if back, err := ParseWatch(w.String()); err != nil || back != w {
			t.Errorf("%q does not round-trip through String: %q", c.in, w.String())
		}
	}
}

func TestValueNames(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Driver: DriverBME280}, "humidity pressure temp"},
		{Config{Driver: DriverBMP280}, "pressure temp"},
		{Config{Driver: DriverADS1115, Channels: []int{2, 0}}, "a0 a2"},
		{Config{Driver: DriverADS1115}, "a0 a1 a2 a3"},
		{Config{Driver: DriverSim, Values: map[string]string{"b": "1", "a": "2"}}, "a b"},
		{Config{Driver: DriverGPIO, Pin: "GPIO4"}, "level"},
	} {
		if got := strings.Join(c.cfg.ValueNames(), " "); got != c.want {
			t.Errorf("%s: %q, want %q", c.cfg.Driver, got, c.want)
		}
	}
}
