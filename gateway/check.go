package gateway

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strings"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sensors"
	"github.com/moongate/moongate/sync/sink"
)

// Load reads a config and checks it as `moongate run` would before it opens anything:
// config.Load's errors and Check's, all in one list, so that one pass shows everything
// that stands between the file and a running gateway.
func Load(path string) (*config.Config, error) {
	c, err := config.Load(path)
	var errs config.ErrorList
	if err != nil && (c == nil || !errors.As(err, &errs)) {
		return nil, err
	}
	more, err := check(c, errs)
	if err != nil {
		return nil, err
	}
	if errs = append(errs, more...); len(errs) > 0 {
		// In the config's order: an error in a Lua file stands where its function does.
		at := func(e *config.Error) int {
			if e.File == c.File {
				return e.Line
			}
			return c.Errorf(e.Key, "").Line
		}
		sort.SliceStable(errs, func(i, j int) bool { return at(errs[i]) < at(errs[j]) })
		return nil, errs
	}
	return c, nil
}

// Check validates a loaded config as far as it can without opening anything: the sensors
// section, every function (compiled and its top level run, as a deploy does), every sink
// and the external broker's client (their TLS files read). Whatever would make Run refuse
// the config at start, apart from hardware, ports and the data dir, is refused here.
func Check(c *config.Config) error {
	errs, err := check(c, nil)
	if err != nil {
		return err
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// check is Check on a config that may already have errors (known): a function whose name
// or source the config refused is not built, and a leaf's verdict on a setting the config
// already refused (a limit, a sink's URL) is not reported twice.
func check(c *config.Config, known config.ErrorList) (config.ErrorList, error) {
	var errs config.ErrorList
	cfgs, err := sensorConfigs(c)
	if err != nil {
		var list config.ErrorList
		if !errors.As(err, &list) {
			return nil, err
		}
		errs = append(errs, list...)
	} else {
		list, err := checkWatches(c, cfgs)
		if err != nil {
			return nil, err
		}
		errs = append(errs, list...)
	}
	// under reports whether the config already refused something at or under key: a
	// setting both the config and a leaf refuse is reported once, by the config.
	under := func(key string) bool {
		for _, e := range known {
			if e.Key == key || strings.HasPrefix(e.Key, key+".") || strings.HasPrefix(e.Key, key+"[") {
				return true
			}
		}
		return false
	}
	if c.MQTT.Broker == "embedded" {
		pwErr, aclErr := mqtt.CheckDeviceFiles(c.Resolve(c.MQTT.Embedded.PasswordFile), c.Resolve(c.MQTT.Embedded.ACLFile))
		if pwErr != nil {
			errs = append(errs, c.Errorf("mqtt.embedded.password_file", "%v", pwErr))
		}
		if aclErr != nil {
			errs = append(errs, c.Errorf("mqtt.embedded.acl_file", "%v", aclErr))
		}
		if t := c.MQTT.Embedded.TLS; c.MQTT.Embedded.TLSListen != "" && !under("mqtt.embedded.tls") {
			if err := mqtt.CheckServerTLS(c.Resolve(t.Cert), c.Resolve(t.Key), c.Resolve(t.ClientCA)); err != nil {
				errs = append(errs, c.Errorf("mqtt.embedded.tls", "%v", err))
			}
		}
	}
	for i, f := range c.Functions {
		key := fmt.Sprintf("functions[%d]", i)
		if under(key+".name") || under(key+".source") {
			continue
		}
		err := checkFunction(c, specFromConfig(f))
		var ce *luafn.CompileError
		if err == nil || !errors.As(err, &ce) && under(key) {
			continue
		}
		errs = append(errs, functionError(c, key, f, err))
	}
	for i, sc := range c.Sync.Sinks {
		key := fmt.Sprintf("sync.sinks[%d]", i)
		if under(key) {
			continue
		}
		if err := sink.Check(sinkConfig(c, sc)); err != nil {
			errs = append(errs, c.Errorf(key, "%v", err))
		}
	}
	if !under("firmware.keys") {
		if _, err := firmwareKeys(c); err != nil {
			errs = append(errs, c.Errorf("firmware.keys", "%v", err))
		}
	}
	if c.Fleet.Broker != "" && !under("fleet") {
		if _, err := mqtt.NewClient(fleetClientOptions(c)); err != nil {
			errs = append(errs, c.Errorf("fleet", "%v", err))
		}
	}
	if c.MQTT.Broker != "embedded" && !under("mqtt") {
		if _, err := mqtt.NewClient(clientOptions(c)); err != nil {
			errs = append(errs, c.Errorf("mqtt", "%v", err))
		}
	}
	return errs, nil
}

// checkWatches registers every gpio trigger's watch with a sensors.Manager that has no
// hardware, as the start registers them with the real one: a watch the sensors refuse (an
// output pin, say) is refused here, at its trigger.
func checkWatches(c *config.Config, cfgs map[string]sensors.Config) (config.ErrorList, error) {
	m, err := sensors.New(cfgs, sensors.Options{AllowMissingHardware: true, Opener: noHardware{}, W1: noHardware{},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, fmt.Errorf("sensors without hardware: %w", err)
	}
	defer m.Close()
	var errs config.ErrorList
	for i, f := range c.Functions {
		for j, t := range f.Parsed {
			if t.Kind != config.TriggerGPIO {
				continue
			}
			if err := m.Watch(t.Watch); err != nil {
				errs = append(errs, c.Errorf(fmt.Sprintf("functions[%d].triggers[%d]", i, j), "%v", err))
			}
		}
	}
	return errs, nil
}

// noHardware is the machine check runs on as far as the sensors know: no bus, no pin, no
// 1-Wire device. Simulated sensors and pins need none.
type noHardware struct{}

var errNoHardware = errors.New("moongate check opens no hardware")

func (noHardware) OpenI2C(string) (i2c.BusCloser, error) { return nil, errNoHardware }
func (noHardware) OpenPin(string) (gpio.PinIO, error)    { return nil, errNoHardware }
func (noHardware) Open(string) (fs.File, error)          { return nil, fs.ErrNotExist }

// checkFunction builds the function as a deploy does and throws it away. Its top level
// runs without the store: a kv.get there finds nothing.
func checkFunction(c *config.Config, spec functionSpec) error {
	fn, err := newFunction(spec, luafn.Host{GatewayID: c.Gateway.ID})
	if err != nil {
		return err
	}
	fn.Close()
	return nil
}

// Sandbox builds the function of a functions: entry as a deploy of it builds it (the same
// compile, limits and store limits), on host's KV, clock and log callback: moongate test
// runs functions offline in it.
func Sandbox(f config.Function, host luafn.Host) (*luafn.Function, error) {
	spec := specFromConfig(f)
	spec.Version = 1
	host.Store = storeLimits()
	return newFunction(spec, host)
}

// newFunction compiles spec (luafn.Compile) and warms its VMs (luafn.New, which runs the
// top level and requires handle): every verdict on a function's source and limits comes
// from here, for check as for a deploy. Errors are luafn's, a *luafn.CompileError when
// about the source.
func newFunction(spec functionSpec, host luafn.Host) (*luafn.Function, error) {
	filename := spec.Filename
	if filename == "" {
		filename = spec.Name + ".lua"
	}
	prog, err := luafn.Compile(luafn.Spec{
		Name: spec.Name, Version: spec.Version, Filename: filename, Source: spec.Source, Env: spec.Env,
		Limits: luafn.Limits{Timeout: spec.Timeout, Memory: spec.Memory, Concurrency: spec.Concurrency},
	})
	if err != nil {
		return nil, err
	}
	return luafn.New(prog, host)
}

// functionError places a function's error: at the Lua file's line when it has one (that
// is where the fix goes), else at the function's entry in the config.
func functionError(c *config.Config, key string, f config.Function, err error) *config.Error {
	var ce *luafn.CompileError
	if errors.As(err, &ce) && ce.Line > 0 {
		return &config.Error{File: c.Resolve(f.Source), Line: ce.Line, Key: key, Msg: ce.Message}
	}
	if errors.As(err, &ce) {
		return c.Errorf(key+".source", "%s: %s", c.Resolve(f.Source), ce.Message)
	}
	return c.Errorf(key, "%v", err)
}
