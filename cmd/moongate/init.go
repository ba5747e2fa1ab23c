package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"periph.io/x/conn/v3/i2c"

	"github.com/moongate/moongate/internal/atomicfile"
	"github.com/moongate/moongate/sensors"
)

// hardware is where init looks: the root file system, for /proc, /sys and /dev, and an
// I²C bus opener. Tests pass an fstest.MapFS and i2ctest buses.
type hardware struct {
	root fs.FS
	open func(bus string) (i2c.BusCloser, error)
}

func hostHardware() hardware {
	return hardware{root: os.DirFS("/"), open: (&sensors.HostOpener{}).OpenI2C}
}

// machine is what init found.
type machine struct {
	model string // the device tree's model ("Raspberry Pi 4 Model B Rev 1.4"), "" without one
	buses []probedBus
}

func (m machine) pi() bool { return strings.Contains(m.model, "Raspberry Pi") }

// probedBus is one /dev/i2c-N and what answered on it.
type probedBus struct {
	name  string // "1", as sensors.NAME.bus takes it
	found []sensors.Found
	err   error // it could not be opened
}

// The device tree's model, where the kernel shows it (the second on older kernels).
var modelFiles = []string{"proc/device-tree/model", "sys/firmware/devicetree/base/model"}

// detect reads the machine's model and probes each I²C bus for the drivers' chips.
func detect(hw hardware) machine {
	var m machine
	for _, f := range modelFiles {
		if b, err := fs.ReadFile(hw.root, f); err == nil {
			m.model = strings.TrimSpace(strings.TrimRight(string(b), "\x00"))
			break
		}
	}
	devs, _ := fs.Glob(hw.root, "dev/i2c-*") // the pattern is valid
	var names []string
	for _, d := range devs {
		if n := strings.TrimPrefix(d, "dev/i2c-"); n != "" {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
	for _, n := range names {
		pb := probedBus{name: n}
		if b, err := hw.open(n); err != nil {
			pb.err = err
		} else {
			pb.found = sensors.Probe(b)
			b.Close()
		}
		m.buses = append(m.buses, pb)
	}
	return m
}

// initSettings are the choices a starter config is written with.
type initSettings struct {
	host    string // the gateway id, and the console's .local name
	dataDir string
	token   string
}

// starterConfig is moongate.yaml for m, with a comment for what was found and what the
// next steps are.
func starterConfig(m machine, s initSettings) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# moongate.yaml, written by `moongate init` for this machine%s.", describeModel(m))
	w("# Check it with `moongate check -c FILE`; the settings: docs/SPEC.md §3.")
	w("gateway:")
	w("  id: %s", yamlString(s.host))
	w("  data_dir: %s   # the store; keep it on this machine", yamlString(s.dataDir))
	w("  console:")
	w("    # The console and the API, from the LAN: http://%s.local:8080/ with the token below.", s.host)
	w("    # Keep this file private (it is written mode 0600): the token opens the console.")
	w("    listen: 0.0.0.0:8080")
	w("    token: %s", yamlString(s.token))
	w("mqtt:")
	w("  broker: embedded")
	w("  embedded:")
	w("    # This machine only. To let devices on the LAN connect, give each a password")
	w("    # (moongate passwd passwd DEVICE, beside this file), then set")
	w("    # listen: 0.0.0.0:1883 and password_file: passwd.")
	w("    listen: 127.0.0.1:1883")
	w("# homeassistant: {discovery: true}   # show the sensors in Home Assistant")
	w("sensors:")
	names := map[string]bool{}
	found := false
	for _, pb := range m.buses {
		if pb.err != nil {
			w("  # I2C bus %s: cannot open it: %v (is this user in the i2c group?)", pb.name, pb.err)
			continue
		}
		if len(pb.found) == 0 {
			w("  # I2C bus %s: none of the drivers' chips answered", pb.name)
		}
		for _, f := range pb.found {
			name := fmt.Sprintf("%s-%02x", f.Driver, f.Addr)
			if names[name] {
				name = fmt.Sprintf("%s-%s-%02x", f.Driver, pb.name, f.Addr)
			}
			names[name] = true
			found = true
			w("  # I2C bus %s, address %#02x: %s", pb.name, f.Addr, f.What)
			w("  %s: {driver: %s, bus: %q, addr: %#02x, every: 10s}", name, f.Driver, pb.name, f.Addr)
		}
	}
	if !found {
		switch {
		case len(m.buses) > 0:
		case m.pi():
			w("  # No I2C bus: turn I2C on (sudo raspi-config nonint do_i2c 0, or raspi-config,")
			w("  # Interface Options, I2C), reboot, and run moongate init --force again.")
		default:
			w("  # No I2C bus on this machine.")
		}
		w("  # No sensor found: a simulated one, so that the console shows data.")
		w("  sim-1: {driver: sim, every: 1s, values: {temp: \"21+3*sin(t/60)+noise(0.1)\", humidity: \"45+5*sin(t/300)\"}}")
	}
	w("functions: []   # add functions here, or deploy them: moongate deploy NAME FILE.lua --trigger sensor:NAME")
	return b.String()
}

func describeModel(m machine) string {
	if m.model == "" {
		return ""
	}
	return " (" + m.model + ")"
}

// yamlString quotes s for YAML.
func yamlString(s string) string { return strconv.Quote(s) }

func initCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return runInit(hostHardware(), args, stdout, stderr)
}

func runInit(hw hardware, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", stderr)
	out := fs.String("o", defaultConfig, "the config file to write")
	force := fs.Bool("force", false, "overwrite the file if it exists")
	data := fs.String("data", "", "the data dir (default: moongate-data beside the config file)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); err == nil && !*force {
		return usagef("%s exists: moongate init --force overwrites it", *out)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// Absolute, so that the gateway finds its data wherever it is started from.
	s := initSettings{dataDir: filepath.Join(filepath.Dir(path), "moongate-data")}
	if *data != "" {
		if s.dataDir, err = filepath.Abs(*data); err != nil {
			return err
		}
	}
	if s.host, err = os.Hostname(); err != nil || s.host == "" {
		s.host = "moongate"
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return fmt.Errorf("generate the console token: %w", err)
	}
	s.token = hex.EncodeToString(tok)

	m := detect(hw)
	if err := atomicfile.Write(path, []byte(starterConfig(m, s)), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", *out, err)
	}
	fmt.Fprintf(stdout, "wrote %s for this machine%s\n", *out, describeModel(m))
	sensorsFound := 0
	for _, pb := range m.buses {
		for _, f := range pb.found {
			fmt.Fprintf(stdout, "  I2C bus %s, %#02x: %s\n", pb.name, f.Addr, f.What)
			sensorsFound++
		}
		if pb.err != nil {
			fmt.Fprintf(stdout, "  I2C bus %s: cannot open it: %v\n", pb.name, pb.err)
		}
	}
	if sensorsFound == 0 {
		fmt.Fprintln(stdout, "  no sensor found: a simulated one (sim-1) stands in")
	}
	fmt.Fprintf(stdout, "\nConsole: http://%s.local:8080/ (here: http://127.0.0.1:8080/)\nToken:   %s\n", s.host, s.token)
	fmt.Fprintf(stdout, "\nNext:\n  moongate check -c %[1]s\n  moongate run -c %[1]s\n", *out)
	fmt.Fprintf(stdout, "  devices on the LAN: moongate passwd %s DEVICE, then set mqtt.embedded.listen: 0.0.0.0:1883 and password_file: passwd\n",
		filepath.Join(filepath.Dir(*out), "passwd"))
	return nil
}
