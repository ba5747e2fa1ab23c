package sensors

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moongate/moongate/sensors/ads1115"
	"github.com/moongate/moongate/sensors/expr"
)

// Drivers, the values of Config.Driver.
const (
	DriverBME280  = "bme280"  // temp °C, humidity %RH, pressure hPa
	DriverBMP280  = "bmp280"  // temp °C, pressure hPa
	DriverSHT3x   = "sht3x"   // temp °C, humidity %RH
	DriverADS1115 = "ads1115" // a0..a3 in volts
	DriverBH1750  = "bh1750"  // lux
	DriverDS18B20 = "ds18b20" // temp °C
	DriverGPIO    = "gpio"    // a pin: input (edges, level) or output
	DriverSim     = "sim"     // values computed from expressions over time
)

// drivers lists every driver name, for errors.
var drivers = []string{DriverBME280, DriverBMP280, DriverSHT3x, DriverADS1115, DriverBH1750, DriverDS18B20, DriverGPIO, DriverSim}

// i2cAddrs lists, per I²C driver, the addresses the chip can answer on;
// the first is the default.
var i2cAddrs = map[string][]uint16{
	DriverBME280:  {0x76, 0x77},
	DriverBMP280:  {0x76, 0x77},
	DriverSHT3x:   {0x44, 0x45},
	DriverADS1115: {0x48, 0x49, 0x4A, 0x4B},
	DriverBH1750:  {0x23, 0x5C},
}

// Defaults.
const (
	DefaultBus   = "1" // the Raspberry Pi's I²C bus on header pins 3 and 5
	DefaultEvery = 10 * time.Second
	// minEvery keeps a typo such as "every: 1ms" from monopolising a bus
	// shared with other sensors; a sim sensor may go faster.
	minEvery    = 100 * time.Millisecond
	minEverySim = 10 * time.Millisecond
)

// Config is one entry of the sensors: map of moongate.yaml. Which fields
// apply depends on Driver; a field set for a driver that does not use it
// is an error, so typos do not go unnoticed.
type Config struct {
	Driver string `yaml:"driver" json:"driver"`

	// Every is the poll interval. Zero means DefaultEvery for the measuring
	// drivers, and no polling for gpio pins (which report edges instead).
	Every time.Duration `yaml:"every" json:"every,omitempty"`

	// I²C drivers.
	Bus  string `yaml:"bus" json:"bus,omitempty"`   // bus name or number; empty means DefaultBus
	Addr uint16 `yaml:"addr" json:"addr,omitempty"` // 7-bit address (0x76 in YAML); zero means the chip's default

	// gpio.
	Pin     string `yaml:"pin" json:"pin,omitempty"`         // e.g. GPIO17 (BCM numbering)
	Pull    string `yaml:"pull" json:"pull,omitempty"`       // up, down or none; empty leaves the pin as it is
	Mode    string `yaml:"mode" json:"mode,omitempty"`       // in (default) or out; only out pins can be written
	Initial int    `yaml:"initial" json:"initial,omitempty"` // out: the level set at start, 0 or 1
	Sim     bool   `yaml:"sim" json:"sim,omitempty"`         // simulate the pin: inputs change only through Manager.SimulateEdge

	// sim: value name -> expression over t (seconds since start), e.g.
	// "20+5*sin(t/60)+noise(0.2)"; see package expr.
	Values map[string]string `yaml:"values" json:"values,omitempty"`

	// ds18b20: the 1-Wire id (28-xxxxxxxxxxxx); empty means the only one present.
	Device string `yaml:"device" json:"device,omitempty"`

	// ads1115: channels to read (default all four) and the full-scale range
	// in volts (one of 6.144, 4.096, 2.048, 1.024, 0.512, 0.256; default 2.048).
	Channels []int   `yaml:"channels" json:"channels,omitempty"`
	Range    float64 `yaml:"range" json:"range,omitempty"`
}

// FieldError is one problem with one field of a Config. Field is the YAML
// key ("addr", "values.temp"), so the gateway can point at its line.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks c without touching hardware. It returns nil or every
// problem at once as errors.Join of *FieldError values.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	// unused reports fields set for a driver that ignores them.
	unused := func(used ...string) {
		set := map[string]bool{
			"bus": c.Bus != "", "addr": c.Addr != 0, "pin": c.Pin != "", "pull": c.Pull != "",
			"mode": c.Mode != "", "initial": c.Initial != 0, "sim": c.Sim, "values": c.Values != nil,
			"device": c.Device != "", "channels": c.Channels != nil, "range": c.Range != 0,
		}
		keys := make([]string, 0, len(set))
		for k := range set {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if set[k] && !slices.Contains(used, k) {
				bad(k, "not used by driver %s", c.Driver)
			}
		}
	}
	if c.Every < 0 {
		bad("every", "must not be negative")
	}
	switch c.Driver {
	case DriverBME280, DriverBMP280, DriverSHT3x, DriverBH1750, DriverADS1115:
		used := []string{"bus", "addr"}
		if c.Driver == DriverADS1115 {
			used = append(used, "channels", "range")
			seen := map[int]bool{}
			for _, ch := range c.Channels {
				if ch < 0 || ch > 3 {
					bad("channels", "channel %d is not 0..3", ch)
				} else if seen[ch] {
					bad("channels", "channel %d listed twice", ch)
				}
				seen[ch] = true
			}
			if c.Range != 0 && !slices.Contains(ads1115.FullScales(), c.Range) {
				bad("range", "%g is not one of %v (volts)", c.Range, ads1115.FullScales())
			}
		}
		unused(used...)
		if addrs := i2cAddrs[c.Driver]; c.Addr != 0 && !slices.Contains(addrs, c.Addr) {
			bad("addr", "%#x is not an address a %s answers on (%s)", c.Addr, c.Driver, hexList(addrs))
		}
		if c.Every > 0 && c.Every < minEvery {
			bad("every", "%s is shorter than %s", c.Every, minEvery)
		}
	case DriverDS18B20:
		unused("device")
		if c.Device != "" && (!strings.HasPrefix(c.Device, "28-") || strings.ContainsAny(c.Device, "/\\") || c.Device == "28-") {
			bad("device", "%q is not a DS18B20 id (28-xxxxxxxxxxxx)", c.Device)
		}
		if c.Every > 0 && c.Every < time.Second {
			// The kernel's conversion alone takes 750 ms.
			bad("every", "%s is shorter than the 1s a DS18B20 reading takes", c.Every)
		}
	case DriverGPIO:
		unused("pin", "pull", "mode", "initial", "sim")
		if c.Pin == "" {
			bad("pin", "required (e.g. GPIO17)")
		}
		if _, err := parsePull(c.Pull); err != nil {
			bad("pull", "%v", err)
		}
		switch c.Mode {
		case "", ModeIn:
			if c.Initial != 0 {
				bad("initial", "only for mode: out")
			}
		case ModeOut:
			if c.Pull != "" {
				bad("pull", "only for inputs")
			}
			if c.Every != 0 {
				bad("every", "only for inputs")
			}
			if c.Initial != 0 && c.Initial != 1 {
				bad("initial", "must be 0 or 1")
			}
		default:
			bad("mode", "%q is not in or out", c.Mode)
		}
		if c.Every > 0 && c.Every < minEvery {
			bad("every", "%s is shorter than %s", c.Every, minEvery)
		}
	case DriverSim:
		unused("values")
		if len(c.Values) == 0 {
			bad("values", "required: at least one name: expression, e.g. temp: \"20+5*sin(t/60)\"")
		}
		names := make([]string, 0, len(c.Values))
		for name := range c.Values {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if name == "" {
				bad("values", "empty value name")
				continue
			}
			if _, err := expr.Parse(c.Values[name]); err != nil {
				bad("values."+name, "%v", err)
			}
		}
		if c.Every > 0 && c.Every < minEverySim {
			bad("every", "%s is shorter than %s", c.Every, minEverySim)
		}
	case "":
		bad("driver", "required (one of %s)", strings.Join(drivers, ", "))
	default:
		bad("driver", "unknown driver %q (one of %s)", c.Driver, strings.Join(drivers, ", "))
	}
	return errors.Join(errs...)
}

// Modes of a gpio pin.
const (
	ModeIn  = "in"
	ModeOut = "out"
)

// ValueNames are the names of the values a reading of c carries (event.values), sorted.
func (c Config) ValueNames() []string {
	var names []string
	switch c.Driver {
	case DriverBME280:
		names = []string{"humidity", "pressure", "temp"}
	case DriverBMP280:
		names = []string{"pressure", "temp"}
	case DriverSHT3x:
		names = []string{"humidity", "temp"}
	case DriverDS18B20:
		names = []string{"temp"}
	case DriverBH1750:
		names = []string{"lux"}
	case DriverADS1115:
		for _, ch := range c.adsChannels() {
			names = append(names, "a"+strconv.Itoa(ch))
		}
	case DriverGPIO:
		names = []string{"level"}
	case DriverSim:
		for name := range c.Values {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// adsChannels are the ads1115 channels read: those configured, else all four.
func (c Config) adsChannels() []int {
	if len(c.Channels) == 0 {
		return []int{0, 1, 2, 3}
	}
	return c.Channels
}

func (c Config) isOutput() bool { return c.Driver == DriverGPIO && c.Mode == ModeOut }

// every returns the effective poll interval; zero means not polled.
func (c Config) every() time.Duration {
	switch {
	case c.Every != 0:
		return c.Every
	case c.Driver == DriverGPIO:
		return 0
	}
	return DefaultEvery
}

func (c Config) bus() string {
	if c.Bus == "" {
		return DefaultBus
	}
	return c.Bus
}

func (c Config) addr() uint16 {
	if c.Addr == 0 {
		return i2cAddrs[c.Driver][0]
	}
	return c.Addr
}

func hexList(addrs []uint16) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = fmt.Sprintf("%#x", a)
	}
	return strings.Join(s, ", ")
}
