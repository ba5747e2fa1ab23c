package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sensors"
	"github.com/moongate/moongate/sync/sink"
	"github.com/moongate/moongate/sync/store"
)

func (g *Gateway) openBus() (mqtt.Bus, error) {
	m := g.cfg.MQTT
	logger := g.logger.With("component", "mqtt")
	if m.Broker == "embedded" {
		b, err := mqtt.NewEmbedded(mqtt.EmbeddedOptions{
			Listen: m.Embedded.Listen, WSListen: m.Embedded.WSListen,
			Username: m.Username, Password: m.Password, Logger: logger,
			// The gateway finishes what it runs before closing the bus; anything still
			// pending then is never acknowledged, so waiting would only eat the 5 s stop.
			DrainTimeout: -1,
		})
		if err != nil {
			return nil, err // mqtt's errors name the embedded broker already
		}
		return b, nil
	}
	c, err := mqtt.NewClient(mqtt.ClientOptions{
		Broker: m.Broker, ClientID: m.ClientID, Username: m.Username, Password: m.Password,
		TLS:    mqtt.TLSFiles{CA: g.cfg.Resolve(m.TLS.CA), Cert: g.cfg.Resolve(m.TLS.Cert), Key: g.cfg.Resolve(m.TLS.Key)},
		Logger: logger, DrainTimeout: -1,
	})
	if err != nil {
		return nil, fmt.Errorf("mqtt client: %w", err)
	}
	return c, nil
}

// openSensors decodes the sensors: section with the sensors package's own type and opens
// the hardware. A sensor that names missing hardware stops the start unless missing
// hardware is allowed.
func (g *Gateway) openSensors() error {
	cfgs, err := sensorConfigs(g.cfg)
	if err != nil {
		return err
	}
	m, err := sensors.New(cfgs, sensors.Options{
		AllowMissingHardware: g.opts.AllowMissingHardware || g.cfg.Gateway.AllowMissingHardware,
		Logger:               g.logger.With("component", "sensors"),
	})
	if err != nil {
		return fmt.Errorf("sensors: %w", err)
	}
	g.sensors, g.pins, g.sensorCfgs = m, m, cfgs
	for name, c := range cfgs {
		if c.Mode == sensors.ModeOut {
			g.outputPins = append(g.outputPins, name, c.Pin)
		}
	}
	return nil
}

// sensorConfigs decodes and validates every sensors: entry, all errors at once, each
// with file, line and key.
func sensorConfigs(c *config.Config) (map[string]sensors.Config, error) {
	out := map[string]sensors.Config{}
	var errs config.ErrorList
	names := make([]string, 0, len(c.Sensors))
	for name := range c.Sensors {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		n := c.Sensors[name]
		key := "sensors." + name
		var sc sensors.Config
		if err := c.DecodeStrict(&n, key, &sc); err != nil {
			var list config.ErrorList
			if errors.As(err, &list) {
				errs = append(errs, list...)
				continue
			}
			return nil, err
		}
		if err := sc.Validate(); err != nil {
			errs = append(errs, fieldErrors(c, key, err)...)
			continue
		}
		out[name] = sc
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// fieldErrors locates each of the sensors package's field errors at its own line.
func fieldErrors(c *config.Config, key string, err error) config.ErrorList {
	var out config.ErrorList
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var fe *sensors.FieldError
		if errors.As(e, &fe) {
			out = append(out, c.Errorf(key+"."+fe.Field, "%v", fe.Err).(*config.Error))
		} else {
			out = append(out, c.Errorf(key, "%v", e).(*config.Error))
		}
	}
	return out
}

// Check validates a config as far as it can without opening anything: the config itself,
// the sensors section, and every function's source, which must compile. It is
// `moongate check`, and the first step of `moongate run`.
func Check(c *config.Config) error {
	var errs config.ErrorList
	if _, err := sensorConfigs(c); err != nil {
		var list config.ErrorList
		if !errors.As(err, &list) {
			return err
		}
		errs = append(errs, list...)
	}
	for i, f := range c.Functions {
		if f.Code == "" && f.Source != "" {
			continue // unreadable source: already reported by config.Load
		}
		_, err := luafn.Compile(luafn.Spec{Name: f.Name, Filename: f.Source, Source: f.Code,
			Limits: luafn.Limits{Timeout: f.Timeout, Memory: int64(f.Memory), Concurrency: f.Concurrency}})
		if err == nil {
			continue
		}
		e := c.Errorf(fmt.Sprintf("functions[%d].source", i), "%v", err).(*config.Error)
		var ce *luafn.CompileError
		if errors.As(err, &ce) && ce.Line > 0 {
			// Point at the Lua file's own line: that is where the fix goes.
			e = &config.Error{File: c.Resolve(f.Source), Line: ce.Line, Key: fmt.Sprintf("functions[%d]", i), Msg: ce.Message}
		}
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// checkTrigger refuses triggers that name sensors or pins the gateway does not have. A
// gpio trigger's watch is registered with the sensors before they run; a deploy that needs
// a new watch later is refused, since the pin's edge detection is set up at start.
func (g *Gateway) checkTrigger(t config.Trigger) error {
	switch t.Kind {
	case config.TriggerSensor:
		if _, ok := g.cfg.Sensors[t.Sensor]; !ok {
			return fmt.Errorf("trigger %q: no sensor %q in the config", t.Spec, t.Sensor)
		}
	case config.TriggerGPIO:
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.watched[t.Watch] {
			return nil
		}
		if g.sensorsRunning {
			return fmt.Errorf("trigger %q: a new gpio watch needs a restart: add the trigger to moongate.yaml", t.Spec)
		}
		if err := g.sensors.Watch(t.Watch); err != nil {
			return fmt.Errorf("trigger %q: %w", t.Spec, err)
		}
		g.watched[t.Watch] = true
	}
	return nil
}

// luaHost gives a function what it may reach: its KV namespace, the pins (writing only
// those declared as outputs), the gateway id; its log lines go out as they are made.
func (g *Gateway) luaHost() luafn.Host {
	return luafn.Host{KV: g.store, Pins: g.pins, WritablePins: g.outputPins, GatewayID: g.cfg.Gateway.ID, OnLog: g.functionLog}
}

// functionLog takes a function's log line as it is made (luafn bounds how many a second):
// it goes to the gateway's log at its own level and to the live console; a report of
// dropped lines is counted too.
func (g *Gateway) functionLog(r luafn.LogRecord) {
	if r.Dropped > 0 {
		g.metrics.logLinesDropped.WithLabelValues(r.Function).Add(float64(r.Dropped))
	}
	attrs := []any{"function", r.Function, "version", r.Version}
	if r.EventID != "" {
		attrs = append(attrs, "event", r.EventID)
	}
	if r.File != "" {
		attrs = append(attrs, "at", fmt.Sprintf("%s:%d", r.File, r.Line))
	}
	g.logger.Log(context.Background(), r.Level, r.Message, attrs...)
	g.live.log(r)
}

func (g *Gateway) openSinks() error {
	for i, sc := range g.cfg.Sync.Sinks {
		cfg := sink.Config{
			Name: sc.Name, Streams: sc.Streams, GatewayID: g.cfg.Gateway.ID,
			Batch: sink.Batch{MaxRecords: sc.Batch.MaxRecords, MaxBytes: int(sc.Batch.MaxBytes), Linger: sc.Batch.Linger},
		}
		if h := sc.HTTP; h != nil {
			cfg.HTTP = &sink.HTTPConfig{URL: h.URL, Headers: h.Headers, HMACSecret: h.HMACSecret,
				CAFile: g.cfg.Resolve(h.CA), Timeout: h.Timeout, Gzip: h.Gzip}
		}
		if m := sc.MQTT; m != nil {
			cfg.MQTT = &sink.MQTTConfig{Broker: m.Broker, Topic: m.Topic, QoS: byte(m.QoS), ClientID: m.ClientID,
				Username: m.Username, Password: m.Password, Window: m.Window,
				TLS: sink.TLSFiles{CA: g.cfg.Resolve(m.TLS.CA), Cert: g.cfg.Resolve(m.TLS.Cert), Key: g.cfg.Resolve(m.TLS.Key)}}
		}
		name := sc.Name
		cfg.OnTransition = func(st sink.Status) {
			g.live.sync(name, string(st.State), st.LastError, st.Lag, st.PendingRecords)
		}
		s, err := sink.New(cfg, g.store, busPublisher{g}, g.logger) // the sink adds its name itself
		if err != nil {
			return g.cfg.Errorf(fmt.Sprintf("sync.sinks[%d]", i), "%v", err)
		}
		g.sinks = append(g.sinks, s)
	}
	return nil
}

// busPublisher lets sinks publish downlink commands once the bus exists.
type busPublisher struct{ g *Gateway }

func (p busPublisher) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	if p.g.bus == nil {
		return errors.New("mqtt bus not started")
	}
	return p.g.bus.Publish(ctx, topic, payload, qos, retain)
}

// resolveToken returns the API token: from the config, or, with token: generate, from
// console.token in the data dir, created (mode 0600) on first start.
func (g *Gateway) resolveToken() (string, error) {
	t := g.cfg.Gateway.Console.Token
	if t != "generate" {
		return t, nil
	}
	path := filepath.Join(g.cfg.Gateway.DataDir, "console.token")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	tok := hex.EncodeToString(buf)
	if err := writeFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store token: %w", err)
	}
	g.logger.Info("generated a console token", "file", path)
	return tok, nil
}

// writeFileAtomic writes path so that a crash leaves the old content or the new, never a
// torn file: write a temporary file, sync, rename, sync the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type sensorDoc struct {
	Name      string             `json:"name"`
	Driver    string             `json:"driver"`
	Pin       string             `json:"pin,omitempty"`
	Mode      string             `json:"mode,omitempty"` // gpio: in or out
	Pull      string             `json:"pull,omitempty"`
	Sim       bool               `json:"sim,omitempty"`
	State     string             `json:"state,omitempty"`
	Values    map[string]float64 `json:"values,omitempty"`
	LastError string             `json:"last_error,omitempty"`
	At        time.Time          `json:"at,omitzero"`
}

func (g *Gateway) sensorDocs() []sensorDoc {
	if g.sensors == nil {
		return nil
	}
	var out []sensorDoc
	for _, s := range g.sensors.Status() {
		d := sensorDoc{Name: s.Name, Driver: s.Driver, Pin: s.Pin, State: s.State, Values: s.Values,
			LastError: s.LastError, At: s.LastReading}
		if c := g.sensorCfgs[s.Name]; c.Driver == sensors.DriverGPIO {
			d.Mode, d.Pull, d.Sim = cmp.Or(c.Mode, sensors.ModeIn), c.Pull, c.Sim
		}
		out = append(out, d)
	}
	return out
}

type sinkDoc struct {
	Name        string            `json:"name"`
	State       string            `json:"state"`
	Streams     []string          `json:"streams"`
	LastSuccess time.Time         `json:"last_success,omitzero"`
	LastError   string            `json:"last_error"`
	LastErrorAt time.Time         `json:"last_error_at,omitzero"`
	LagMS       int64             `json:"lag_ms"`
	Pending     int64             `json:"pending"`
	PendingB    int64             `json:"pending_bytes"`
	Delivered   uint64            `json:"delivered"`
	Retried     uint64            `json:"retried"`
	Dropped     uint64            `json:"dropped"`
	DroppedBy   map[string]uint64 `json:"dropped_by,omitempty"`
}

func (g *Gateway) getSync(w http.ResponseWriter, r *http.Request) {
	sinks := []sinkDoc{}
	for i, s := range g.sinks {
		st := s.Status()
		d := sinkDoc{Name: st.Name, State: string(st.State), Streams: g.cfg.Sync.Sinks[i].Streams,
			LastSuccess: st.LastSuccess, LastError: st.LastError, LastErrorAt: st.LastErrorAt,
			LagMS: st.Lag.Milliseconds(), Pending: st.PendingRecords, PendingB: st.PendingBytes,
			Delivered: st.Delivered, Retried: st.Retried, DroppedBy: st.Dropped}
		for _, n := range st.Dropped {
			d.Dropped += n
		}
		sinks = append(sinks, d)
	}
	st := g.store.Stats()
	d := st.Dropped
	writeJSON(w, http.StatusOK, map[string]any{
		"sinks": sinks,
		"outbox": map[string]any{"pending": st.PendingRecords, "bytes": st.PendingBytes,
			"max_bytes": int64(g.cfg.Sync.Outbox.MaxBytes), "dropped": d.Quota + d.TTL + d.Rejected,
			"dropped_by": dropsByCause(d), "disk_bytes": st.DiskBytes, "disk_free": st.DiskFree},
	})
}

func dropsByCause(d store.Drops) map[string]uint64 {
	return map[string]uint64{"quota": d.Quota, "ttl": d.TTL, "rejected": d.Rejected}
}
