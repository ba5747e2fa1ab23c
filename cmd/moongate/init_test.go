package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/moongate/moongate/gateway"
	"github.com/moongate/moongate/sensors"
)

// fakePi is a Raspberry Pi's root file system with the given I²C buses, each answering
// as its Playback says (a bus without one cannot be opened).
func fakePi(model string, buses map[string]*i2ctest.Playback, devs ...string) hardware {
	root := fstest.MapFS{}
	if model != "" {
		root["sys/firmware/devicetree/base/model"] = &fstest.MapFile{Data: []byte(model + "\x00")}
	}
	for _, d := range devs {
		root["dev/i2c-"+d] = &fstest.MapFile{}
	}
	return hardware{root: root, open: func(name string) (i2c.BusCloser, error) {
		if b, ok := buses[name]; ok {
			return b, nil
		}
		return nil, errors.New("open /dev/i2c-" + name + ": permission denied")
	}}
}

func initIn(t *testing.T, hw hardware, args ...string) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "moongate.yaml")
	var stdout, stderr bytes.Buffer
	if err := runInit(hw, append([]string{"-o", path}, args...), &stdout, &stderr); err != nil {
		t.Fatalf("init: %v (%s)", err, stderr.String())
	}
	return path, stdout.String()
}

// loadStarter loads what init wrote with the real loader and runs moongate check on it.
func loadStarter(t *testing.T, path string) map[string]sensors.Config {
	t.Helper()
	cfg, err := gateway.Load(path)
	if err != nil {
		t.Fatalf("the starter config does not load: %v", err)
	}
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{"check", "-c", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("moongate check: %d %s", code, stderr.String())
	}
	out := map[string]sensors.Config{}
	for name, n := range cfg.Sensors {
		var sc sensors.Config
		if err := n.Decode(&sc); err != nil {
			t.Fatal(err)
		}
		out[name] = sc
	}
	return out
}

// On a Pi with sensors on bus 1 and a bus it may not open, init writes an entry for each
// chip that answered, a comment for the bus, and a config that loads and checks.
func TestInitFindsThePiAndItsSensors(t *testing.T) {
	bus1 := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{
		{Addr: 0x44, W: []byte{0xF3, 0x2D}}, {Addr: 0x44, R: []byte{0x00, 0x00, 0x81}}, // SHT3x
		{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x60}}, // BME280
	}}
	hw := fakePi("Raspberry Pi 4 Model B Rev 1.4", map[string]*i2ctest.Playback{"1": bus1}, "1", "20")
	path, out := initIn(t, hw)
	if bus1.Count != len(bus1.Ops) {
		t.Errorf("probes made %d of the bus's %d transactions", bus1.Count, len(bus1.Ops))
	}
	got := loadStarter(t, path)
	if len(got) != 2 || got["bme280-76"].Bus != "1" || got["bme280-76"].Addr != 0x76 || got["sht3x-44"].Driver != "sht3x" {
		t.Fatalf("sensors: %+v", got)
	}
	text, _ := os.ReadFile(path)
	for _, want := range []string{"Raspberry Pi 4 Model B Rev 1.4", "# I2C bus 1, address 0x76: a BME280 (chip id 0x60)",
		"# I2C bus 20: cannot open it: open /dev/i2c-20: permission denied (is this user in the i2c group?)",
		"listen: 127.0.0.1:1883", "moongate passwd"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("the config lacks %q:\n%s", want, text)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode: %v %v", fi.Mode(), err)
	}
	cfg, _ := gateway.Load(path)
	tok := cfg.Gateway.Console.Token
	if len(tok) < 16 || !strings.Contains(out, "Token:   "+tok) || !strings.Contains(out, ".local:8080/") {
		t.Errorf("token %q, output:\n%s", tok, out)
	}
	if cfg.Gateway.DataDir != filepath.Join(filepath.Dir(path), "moongate-data") {
		t.Errorf("data_dir %s", cfg.Gateway.DataDir)
	}
}

// With no sensor (a Pi with I2C off, or a laptop), a simulated one stands in, so the
// console shows data; a Pi is told how to turn I2C on.
func TestInitWithoutSensors(t *testing.T) {
	path, out := initIn(t, fakePi("Raspberry Pi Zero W Rev 1.1", nil), "--data", "/var/lib/moongate")
	got := loadStarter(t, path)
	if got["sim-1"].Driver != "sim" || len(got) != 1 || !strings.Contains(out, "simulated") {
		t.Fatalf("sensors %+v, output %s", got, out)
	}
	text, _ := os.ReadFile(path)
	if !strings.Contains(string(text), "raspi-config") || !strings.Contains(string(text), `data_dir: "/var/lib/moongate"`) {
		t.Errorf("config:\n%s", text)
	}
	path, _ = initIn(t, fakePi("", nil))
	if text, _ := os.ReadFile(path); strings.Contains(string(text), "raspi-config") {
		t.Errorf("not a Pi, yet told to run raspi-config:\n%s", text)
	}
	loadStarter(t, path)
}

// init refuses to overwrite a file unless --force.
func TestInitRefusesToOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "moongate.yaml")
	if err := os.WriteFile(path, []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{"init", "-o", path}, &stdout, &stderr); code != exitUsage ||
		!strings.Contains(stderr.String(), "--force") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if b, _ := os.ReadFile(path); string(b) != "mine\n" {
		t.Fatalf("overwritten: %q", b)
	}
	if err := runInit(fakePi("", nil), []string{"-o", path, "--force"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	loadStarter(t, path)
}
