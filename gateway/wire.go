package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/atomicfile"
	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sensors"
	"github.com/moongate/moongate/sync/sink"
	"github.com/moongate/moongate/sync/store"
)

// openBus opens the embedded broker or the client of an external one; nothing is served
// or connected until its Start.
func openBus(cfg *config.Config, logger *slog.Logger, shortOfMemory func() bool) (mqtt.Bus, error) {
	m := cfg.MQTT
	logger = logger.With(logkey.Component, "mqtt")
	if m.Broker == "embedded" {
		if m.Embedded.AllowAnonymous {
			logger.Warn("embedded broker: allow_anonymous is set: any device that reaches the listener may publish to every function's topics and subscribe to everything",
				"listen", m.Embedded.Listen)
		}
		b, err := mqtt.NewEmbedded(mqtt.EmbeddedOptions{
			Listen: m.Embedded.Listen, WSListen: m.Embedded.WSListen, WSAllowedOrigins: m.Embedded.WSAllowedOrigins,
			PasswordFile: cfg.Resolve(m.Embedded.PasswordFile), ACLFile: cfg.Resolve(m.Embedded.ACLFile),
			TLSListen: m.Embedded.TLSListen, TLSCert: cfg.Resolve(m.Embedded.TLS.Cert), TLSKey: cfg.Resolve(m.Embedded.TLS.Key),
			ClientCA: cfg.Resolve(m.Embedded.TLS.ClientCA),
			Username: m.Username, Password: m.Password, Logger: logger,
			MaxPacketSize: uint32(m.Embedded.MaxPacketSize),
			DeviceRate:    m.Embedded.DeviceRate, DeviceByteRate: int(m.Embedded.DeviceByteRate),
			ShortOfMemory: shortOfMemory,
			Presence:      presence(cfg),
			// The gateway finishes what it runs before closing the bus; anything still
			// pending then is never acknowledged, so waiting would only eat the 5 s stop.
			DrainTimeout: -1,
		})
		if err != nil {
			return nil, err // mqtt's errors name the embedded broker already
		}
		return b, nil
	}
	opts := clientOptions(cfg)
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
		Presence:     presence(c),
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
func openSensors(cfg *config.Config, allowMissingHardware bool, clock Clock, logger *slog.Logger) (*sensors.Manager, map[string]sensors.Config, error) {
	cfgs, err := sensorConfigs(cfg)
	if err != nil {
		return nil, nil, err
	}
	m, err := sensors.New(cfgs, sensors.Options{
		AllowMissingHardware: allowMissingHardware || cfg.Gateway.AllowMissingHardware,
		Logger:               logger.With(logkey.Component, "sensors"),
		Clock:                clock,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("sensors: %w", err)
	}
	return m, cfgs, nil
}

// outputPins are the pins (and their sensor names) declared mode: out: the only ones
// gpio.write may drive.
func outputPins(cfgs map[string]sensors.Config) []string {
	var out []string
	for name, c := range cfgs {
		if c.Mode == sensors.ModeOut {
			out = append(out, name, c.Pin)
		}
	}
	return out
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

// functionHost gives a function what it may reach: its KV namespace, the pins (writing
// only those declared as outputs), the gateway id; its log lines go out as they are made.
func functionHost(cfg *config.Config, kv luafn.KVReader, pins luafn.PinReader, cfgs map[string]sensors.Config, clock Clock, onLog func(luafn.LogRecord)) luafn.Host {
	return luafn.Host{KV: kv, Pins: pins, WritablePins: outputPins(cfgs), GatewayID: cfg.Gateway.ID, OnLog: onLog,
		Store: storeLimits(), Now: clock.Now}
}

// storeLimits are sync/store's own limits, checked where the function calls, not at commit.
func storeLimits() luafn.StoreLimits {
	return luafn.StoreLimits{KeyBytes: store.MaxKeyLen, StreamBytes: store.MaxNameLen, ValueBytes: store.MaxValueLen}
}

// functionLogs take a function's log line as it is made (luafn bounds how many a second):
// it goes to the gateway's log at its own level and to the live console; a report of
// dropped lines is counted too.
type functionLogs struct {
	logger  *slog.Logger
	dropped *prometheus.CounterVec // moongate_log_lines_dropped_total
	live    *live
}

func (fl functionLogs) log(r luafn.LogRecord) {
	if r.Dropped > 0 {
		fl.dropped.WithLabelValues(r.Function).Add(float64(r.Dropped))
	}
	attrs := []any{logkey.Function, r.Function, logkey.Version, r.Version}
	if r.EventID != "" {
		attrs = append(attrs, logkey.Event, r.EventID)
	}
	if r.File != "" {
		attrs = append(attrs, "at", fmt.Sprintf("%s:%d", r.File, r.Line))
	}
	fl.logger.Log(context.Background(), r.Level, r.Message, attrs...)
	fl.live.log(r)
}

// openSinks makes the sync.sinks; downlink commands go out on bus, transitions to the
// live console.
func openSinks(cfg *config.Config, outbox *store.Store, bus mqttPublisher, l *live, clock Clock, logger *slog.Logger) ([]*sink.Sink, error) {
	var sinks []*sink.Sink
	for i, sc := range cfg.Sync.Sinks {
		c := sinkConfig(cfg, sc)
		c.Clock = clock
		name := sc.Name
		c.OnTransition = func(st sink.Status) {
			l.sync(name, string(st.State), st.LastError, st.Lag, st.PendingRecords)
		}
		s, err := sink.New(c, outbox, bus, logger) // the sink adds its name itself
		if err != nil {
			return nil, cfg.Errorf(fmt.Sprintf("sync.sinks[%d]", i), "%v", err)
		}
		sinks = append(sinks, s)
	}
	return sinks, nil
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

// resolveToken returns the API token: from the config, or, with token: generate, from
// console.token in the data dir, created (mode 0600) on first start. A token file that is
// empty or too short is made again: an empty token would turn authentication off.
func resolveToken(cfg *config.Config, logger *slog.Logger) (string, error) {
	t := cfg.Gateway.Console.Token
	if t != "generate" {
		return t, nil
	}
	path := filepath.Join(cfg.Gateway.DataDir, "console.token")
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) >= config.MinTokenLength {
			if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
				logger.Warn("the console token file can be read by other users: chmod 600 it", logkey.File, path, "mode", fi.Mode().Perm().String())
			}
			return tok, nil
		}
		logger.Warn("the console token file holds no usable token: generating a new one", logkey.File, path)
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
	logger.Info("generated a console token", logkey.File, path)
	return tok, nil
}

// warnUnrouted says, once at start, which functions emit to a stream no sink takes.
func warnUnrouted(cfg *config.Config, functions []*version, logger *slog.Logger) {
	for _, v := range functions {
		if v.emit == "" {
			continue
		}
		routed := false
		for _, sc := range cfg.Sync.Sinks {
			routed = routed || store.MatchStream(sc.Streams, v.emit)
		}
		if !routed {
			logger.Warn("no sink takes this function's emit stream: its records wait in the outbox until sync.outbox ttl or on_full drops them",
				logkey.Function, v.name, logkey.Stream, v.emit)
		}
	}
}
