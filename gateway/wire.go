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
	"github.com/moongate/moongate/internal/atomicfile"
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
		if m.Embedded.AllowAnonymous {
			logger.Warn("embedded broker: allow_anonymous is set: any device that reaches the listener may publish to every function's topics and subscribe to everything",
				"listen", m.Embedded.Listen)
		}
		b, err := mqtt.NewEmbedded(mqtt.EmbeddedOptions{
			Listen: m.Embedded.Listen, WSListen: m.Embedded.WSListen, WSAllowedOrigins: m.Embedded.WSAllowedOrigins,
			PasswordFile: g.cfg.Resolve(m.Embedded.PasswordFile), ACLFile: g.cfg.Resolve(m.Embedded.ACLFile),
			TLSListen: m.Embedded.TLSListen, TLSCert: g.cfg.Resolve(m.Embedded.TLS.Cert), TLSKey: g.cfg.Resolve(m.Embedded.TLS.Key),
			ClientCA: g.cfg.Resolve(m.Embedded.TLS.ClientCA),
			Username: m.Username, Password: m.Password, Logger: logger,
			MaxPacketSize: uint32(m.Embedded.MaxPacketSize),
			DeviceRate:    m.Embedded.DeviceRate, DeviceByteRate: int(m.Embedded.DeviceByteRate),
			ShortOfMemory: g.mem.Pressed,
			// The gateway finishes what it runs before closing the bus; anything still
			// pending then is never acknowledged, so waiting would only eat the 5 s stop.
			DrainTimeout: -1,
		})
		if err != nil {
			return nil, err // mqtt's errors name the embedded broker already
		}
		return b, nil
	}
	opts := clientOptions(g.cfg)
	opts.Logger = logger
	c, err := mqtt.NewClient(opts)
	if err != nil {
		return nil, fmt.Errorf("mqtt client: %w", err)
	}
	return c, nil
}

// clientOptions are the external broker's settings; Check builds the client from them
// too, so that a TLS file run would refuse is refused by check.
func clientOptions(c *config.Config) mqtt.ClientOptions {
	m := c.MQTT
	return mqtt.ClientOptions{
		Broker: m.Broker, ClientID: m.ClientID, Username: m.Username, Password: m.Password,
		TLS:          mqtt.TLSFiles{CA: c.Resolve(m.TLS.CA), Cert: c.Resolve(m.TLS.Cert), Key: c.Resolve(m.TLS.Key)},
		DrainTimeout: -1,
	}
}

// deviceByteRate: device_rate: -1 turns the byte share off too.
func deviceByteRate(e config.Embedded) int {
	if e.DeviceRate < 0 {
		return -1
	}
	return int(e.DeviceByteRate)
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

// sensorConfigs decodes and validates every sensors: entry as sensors.New will, all
// errors at once, each with file, line and key.
func sensorConfigs(c *config.Config) (map[string]sensors.Config, error) {
	out := map[string]sensors.Config{}
	var errs config.ErrorList
	for name, n := range c.Sensors {
		var sc sensors.Config
		if err := c.DecodeStrict(&n, "sensors."+name, &sc); err != nil {
			var list config.ErrorList
			if !errors.As(err, &list) {
				return nil, err
			}
			errs = append(errs, list...)
			if !onlyUnknownKeys(list) {
				continue // a value that did not decode would be reported again as missing
			}
		}
		out[name] = sc
	}
	if err := sensors.Check(out); err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var se *sensors.SensorError
			if !errors.As(e, &se) {
				return nil, err
			}
			errs = append(errs, fieldErrors(c, "sensors."+se.Sensor, se.Err)...)
		}
	}
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return nil, errs
	}
	return out, nil
}

func onlyUnknownKeys(list config.ErrorList) bool {
	for _, e := range list {
		if e.Msg != config.MsgUnknownKey {
			return false
		}
	}
	return true
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
			out = append(out, c.Errorf(key+"."+fe.Field, "%v", fe.Err))
		} else {
			out = append(out, c.Errorf(key, "%v", e))
		}
	}
	return out
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
	return luafn.Host{KV: g.store, Pins: g.pins, WritablePins: g.outputPins, GatewayID: g.cfg.Gateway.ID, OnLog: g.functionLog,
		Store: storeLimits()}
}

// storeLimits are sync/store's own limits, checked where the function calls, not at commit.
func storeLimits() luafn.StoreLimits {
	return luafn.StoreLimits{KeyBytes: store.MaxKeyLen, StreamBytes: store.MaxNameLen, ValueBytes: store.MaxValueLen}
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
		cfg := sinkConfig(g.cfg, sc)
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

// sinkConfig translates a sync.sinks entry into the sink package's config.
func sinkConfig(c *config.Config, sc config.Sink) sink.Config {
	cfg := sink.Config{
		Name: sc.Name, Streams: sc.Streams, GatewayID: c.Gateway.ID,
		Batch: sink.Batch{MaxRecords: sc.Batch.MaxRecords, MaxBytes: int(sc.Batch.MaxBytes), Linger: sc.Batch.Linger},
	}
	if h := sc.HTTP; h != nil {
		cfg.HTTP = &sink.HTTPConfig{URL: h.URL, Headers: h.Headers, HMACSecret: h.HMACSecret,
			CAFile: c.Resolve(h.CA), Timeout: h.Timeout, Gzip: h.Gzip, Format: h.Format,
			CloudEvents: sink.CloudEventsConfig{Mode: h.CloudEvents.Mode, Type: h.CloudEvents.Type, Types: h.CloudEvents.Types}}
		if a := h.Auth.AWSSigV4; a != nil {
			cfg.HTTP.Auth.AWSSigV4 = &sink.AWSSigV4{Region: a.Region, Service: a.Service, AccessKeyID: a.AccessKeyID,
				SecretAccessKey: a.SecretAccessKey, SessionToken: a.SessionToken, Profile: a.Profile}
		}
		if o := h.Auth.OAuth2; o != nil {
			cfg.HTTP.Auth.OAuth2 = &sink.OAuth2ClientCredentials{TokenURL: o.TokenURL, ClientID: o.ClientID,
				ClientSecret: o.ClientSecret, ClientSecretFile: c.Resolve(o.ClientSecretFile), Scopes: o.Scopes}
		}
		if g := h.Auth.GoogleIDToken; g != nil {
			cfg.HTTP.Auth.GoogleIDToken = &sink.GoogleIDToken{Audience: g.Audience, CredentialsFile: c.Resolve(g.CredentialsFile)}
		}
	}
	if j := sc.JetStream; j != nil {
		cfg.JetStream = &sink.JetStreamConfig{URL: j.URL, Subject: j.Subject, Creds: c.Resolve(j.Creds), Window: j.Window,
			Timeout: j.Timeout, TLS: sink.TLSFiles{CA: c.Resolve(j.TLS.CA), Cert: c.Resolve(j.TLS.Cert), Key: c.Resolve(j.TLS.Key)}}
	}
	if m := sc.MQTT; m != nil {
		cfg.MQTT = &sink.MQTTConfig{Broker: m.Broker, Topic: m.Topic, QoS: byte(m.QoS), ClientID: m.ClientID,
			Username: m.Username, Password: m.Password, Window: m.Window,
			TLS: sink.TLSFiles{CA: c.Resolve(m.TLS.CA), Cert: c.Resolve(m.TLS.Cert), Key: c.Resolve(m.TLS.Key)}}
	}
	return cfg
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
// console.token in the data dir, created (mode 0600) on first start. A token file that is
// empty or too short is made again: an empty token would turn authentication off.
func (g *Gateway) resolveToken() (string, error) {
	t := g.cfg.Gateway.Console.Token
	if t != "generate" {
		return t, nil
	}
	path := filepath.Join(g.cfg.Gateway.DataDir, "console.token")
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) >= config.MinTokenLength {
			if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
				g.logger.Warn("the console token file can be read by other users: chmod 600 it", "file", path, "mode", fi.Mode().Perm().String())
			}
			return tok, nil
		}
		g.logger.Warn("the console token file holds no usable token: generating a new one", "file", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read the console token: %w", err)
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	tok := hex.EncodeToString(buf)
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store token: %w", err)
	}
	g.logger.Info("generated a console token", "file", path)
	return tok, nil
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
	Kind        string            `json:"kind"` // http, mqtt or jetstream
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
		d := sinkDoc{Name: st.Name, Kind: st.Kind, State: string(st.State), Streams: g.cfg.Sync.Sinks[i].Streams,
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
		"sinks":    sinks,
		"unrouted": unrouted(st),
		"outbox": map[string]any{"pending": st.PendingRecords, "bytes": st.PendingBytes,
			"max_bytes": int64(g.cfg.Sync.Outbox.MaxBytes), "dropped": d.Quota + d.TTL + d.Rejected,
			"dropped_by": dropsByCause(d), "disk_bytes": st.DiskBytes, "disk_free": st.DiskFree},
	})
}

// unroutedDoc is a stream with records that no sink takes: they wait in the outbox until
// the ttl or on_full policy drops them.
type unroutedDoc struct {
	Stream  string `json:"stream"`
	Pending int64  `json:"pending"`
}

func unrouted(st store.Stats) []unroutedDoc {
	out := []unroutedDoc{}
	for name, ss := range st.Streams {
		if ss.Pending == 0 {
			continue
		}
		taken := false
		for _, streams := range st.Consumers {
			_, ok := streams[name]
			taken = taken || ok
		}
		if !taken {
			out = append(out, unroutedDoc{Stream: name, Pending: ss.Pending})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stream < out[j].Stream })
	return out
}

// warnUnrouted says, once at start, which functions emit to a stream no sink takes.
func (g *Gateway) warnUnrouted() {
	for _, v := range g.registry.all() {
		if v.emit == "" {
			continue
		}
		routed := false
		for _, sc := range g.cfg.Sync.Sinks {
			routed = routed || store.MatchStream(sc.Streams, v.emit)
		}
		if !routed {
			g.logger.Warn("no sink takes this function's emit stream: its records wait in the outbox until sync.outbox ttl or on_full drops them",
				"function", v.name, "stream", v.emit)
		}
	}
}

func dropsByCause(d store.Drops) map[string]uint64 {
	return map[string]uint64{"quota": d.Quota, "ttl": d.TTL, "rejected": d.Rejected}
}
