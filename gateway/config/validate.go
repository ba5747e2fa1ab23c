package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/moongate/moongate/internal/redact"
	"github.com/moongate/moongate/sync/sink"
)

// MinTokenLength is the shortest console token accepted beyond loopback, and the shortest
// generated token file kept.
const MinTokenLength = 16

// validate checks what YAML types cannot: references, required fields, enumerations. It
// also reads each function's source file.
func (c *Config) validate() ErrorList {
	var errs ErrorList
	add := func(key, format string, args ...any) { errs = append(errs, c.Errorf(key, format, args...)) }

	switch tok := c.Gateway.Console.Token; {
	case !IsLoopback(c.Gateway.Console.Listen) && tok == "":
		add("gateway.console.token", "required because console.listen %q is not a loopback address: set a token (e.g. token: ${MOONGATE_TOKEN}) or token: generate", c.Gateway.Console.Listen)
	case tok != "" && tok != "generate" && strings.TrimSpace(tok) != tok:
		add("gateway.console.token", "has spaces around it: a client cannot send it")
	case !IsLoopback(c.Gateway.Console.Listen) && tok != "generate" && len(tok) < MinTokenLength:
		add("gateway.console.token", "is %d characters: a token that guards a console beyond loopback needs at least %d (token: generate makes one)", len(tok), MinTokenLength)
	}
	c.validateFirmware(add)
	switch c.Gateway.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("gateway.log_level", "%q is not debug, info, warn or error", c.Gateway.LogLevel)
	}
	switch c.Gateway.Durability {
	case DurabilitySync, DurabilityBatch:
	default:
		add("gateway.durability", "%q is not sync or batch", c.Gateway.Durability)
	}
	if d := c.Gateway.BatchInterval; d < MinBatchInterval || d > MaxBatchInterval {
		add("gateway.batch_interval", "%v is not between %v and %v", d, MinBatchInterval, MaxBatchInterval)
	}
	if e := c.MQTT.Embedded; c.MQTT.Broker == "embedded" && e.TLSListen != "" && (e.TLS.Cert == "" || e.TLS.Key == "") {
		add("mqtt.embedded.tls", "tls_listen needs tls.cert and tls.key: the broker's certificate and its key")
	}
	if e := c.MQTT.Embedded; c.MQTT.Broker == "embedded" && !e.AllowAnonymous && e.PasswordFile == "" && c.MQTT.Username == "" {
		listeners := []struct{ key, addr string }{{"mqtt.embedded.listen", e.Listen}, {"mqtt.embedded.ws_listen", e.WSListen}}
		if e.TLS.ClientCA == "" { // with a client CA, the certificates authenticate the devices
			listeners = append(listeners, struct{ key, addr string }{"mqtt.embedded.tls_listen", e.TLSListen})
		}
		for _, l := range listeners {
			if listen := l.addr; listen != "" && !IsLoopback(listen) {
				add(l.key, "%q is beyond loopback, so every device on the network could connect: set mqtt.embedded.password_file (moongate passwd FILE USER makes one), or allow_anonymous: true to accept any device", listen)
			}
		}
	}
	if c.MQTT.Broker != "embedded" {
		if err := checkURL(c.MQTT.Broker, "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"); err != nil {
			add("mqtt.broker", "%v (or \"embedded\")", err)
		}
	}

	// MQTT's own bound is 256 MiB; below 1 KiB a device's CONNECT may not fit.
	if p := c.MQTT.Embedded.MaxPacketSize; p != 0 && (p < 1<<10 || p > 256<<20) {
		add("mqtt.embedded.max_packet_size", "%s is not between 1KiB and 256MiB", p)
	}

	if q := c.Gateway.KVQuota; q.Keys < 1 {
		add("gateway.kv_quota.keys", "%d is not a count of keys", q.Keys)
	} else if q.Bytes < 1<<10 {
		add("gateway.kv_quota.bytes", "%s is less than 1KiB", q.Bytes)
	}
	if n := c.Gateway.VersionHistory; n < 1 || n > maxVersionHistory {
		add("gateway.version_history", "%d is not between 1 and %d", n, maxVersionHistory)
	}
	if h := c.Gateway.Loops.MaxHops; h < 1 || h > maxHops {
		add("gateway.loops.max_hops", "%d is not between 1 and %d", h, maxHops)
	}
	if r := c.Gateway.Loops.PublishRate; r < 0 && r != -1 {
		add("gateway.loops.publish_rate", "%g is not a rate above 0, or -1 for no limit", r)
	}

	names := map[string]bool{}
	for i := range c.Functions {
		f := &c.Functions[i]
		key := fmt.Sprintf("functions[%d]", i)
		nameErr := CheckFunctionName(f.Name)
		switch {
		case nameErr != nil:
			add(key+".name", "%v", nameErr)
		case names[f.Name]:
			add(key+".name", "duplicate function %q", f.Name)
		}
		names[f.Name] = true
		if err := CheckOverflow(f.Overflow); err != nil {
			add(key+".overflow", "%v", err)
		}
		if f.Source == "" {
			add(key+".source", "required: the function's .lua file")
		} else if code, err := os.ReadFile(c.Resolve(f.Source)); err != nil {
			add(key+".source", "cannot read %s: %v", c.Resolve(f.Source), unwrapPathError(err))
		} else {
			f.Code = string(code)
		}
		if len(f.Triggers) == 0 {
			add(key+".triggers", "at least one trigger is required")
		}
		f.Parsed = f.Parsed[:0]
		for j, spec := range f.Triggers {
			tkey := fmt.Sprintf("%s.triggers[%d]", key, j)
			t, err := ParseTrigger(spec)
			if err != nil {
				add(tkey, "%v", err)
				continue
			}
			if t.Kind == TriggerSensor {
				if _, ok := c.Sensors[t.Sensor]; !ok {
					add(tkey, "sensor %q is not defined under sensors:", t.Sensor)
				}
			}
			if t.Kind == TriggerGPIO && c.gpioSensor(t.Watch.Pin) == "" {
				add(tkey, "pin %q is not declared under sensors: (add e.g. button: {driver: gpio, pin: %s})", t.Watch.Pin, t.Watch.Pin)
			}
			f.Parsed = append(f.Parsed, t)
		}
		for _, fe := range c.Gateway.Ceilings.CheckFunctionLimits(f.Timeout, f.Memory, f.Concurrency, *f.Retries) {
			add(key+"."+fe.Field, "%s", fe.Msg)
		}
	}

	errs = append(errs, c.validateHomeAssistant()...)

	if o := c.Sync.Outbox; o.MaxStreamBytes > o.MaxBytes {
		add("sync.outbox.max_stream_bytes", "%s is more than sync.outbox.max_bytes (%s)", o.MaxStreamBytes, o.MaxBytes)
	}
	switch c.Sync.Outbox.OnFull {
	case "drop_oldest", "reject_new":
	default:
		add("sync.outbox.on_full", "%q is not drop_oldest or reject_new", c.Sync.Outbox.OnFull)
	}
	sinks := map[string]bool{}
	for i, s := range c.Sync.Sinks {
		key := fmt.Sprintf("sync.sinks[%d]", i)
		switch {
		case !sinkName.MatchString(s.Name):
			add(key+".name", "%q is not a valid sink name", s.Name)
		case sinks[s.Name]:
			add(key+".name", "duplicate sink %q", s.Name)
		}
		sinks[s.Name] = true
		kinds := 0
		for _, set := range []bool{s.HTTP != nil, s.MQTT != nil, s.JetStream != nil} {
			if set {
				kinds++
			}
		}
		if kinds != 1 {
			add(key, "set exactly one of http:, mqtt: or jetstream:")
			continue
		}
		if j := s.JetStream; j != nil {
			for _, u := range strings.Split(j.URL, ",") {
				if err := checkURL(strings.TrimSpace(u), "nats", "tls"); err != nil {
					add(key+".jetstream.url", "%v", err)
				}
			}
		}
		if h := s.HTTP; h != nil {
			if err := checkURL(h.URL, "http", "https"); err != nil {
				add(key+".http.url", "%v", err)
			}
			switch h.Gzip {
			case "", "auto", "on", "off":
			default:
				add(key+".http.gzip", "%q is not auto, on or off", h.Gzip)
			}
			switch h.Format {
			case "", sink.FormatMoongate, sink.FormatCloudEvents:
			default:
				add(key+".http.format", "%q is not moongate or cloudevents", h.Format)
			}
			switch h.CloudEvents.Mode {
			case "", sink.CEBatched, sink.CEStructured, sink.CEBinary:
			default:
				add(key+".http.cloudevents.mode", "%q is not batched, structured or binary", h.CloudEvents.Mode)
			}
		}
		if m := s.MQTT; m != nil {
			if err := checkURL(m.Broker, "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"); err != nil {
				add(key+".mqtt.broker", "%v", err)
			}
			if m.Topic == "" {
				add(key+".mqtt.topic", "required, e.g. gw/{gateway}/{stream}")
			}
			if m.QoS < 0 || m.QoS > 1 {
				add(key+".mqtt.qos", "%d is not 0 or 1", m.QoS)
			}
		}
	}
	errs = append(errs, c.validateFleet()...)
	return errs
}

// gpioSensor returns the name of the sensor entry that declares pin (by its sensor name or
// its pin:), or "".
func (c *Config) gpioSensor(pin string) string {
	for name, n := range c.Sensors {
		if name == pin {
			return name
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "pin" && n.Content[i+1].Value == pin {
				return name
			}
		}
	}
	return ""
}

func checkURL(raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not a URL like %s://host:port", redact.URL(raw), schemes[0])
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return nil
		}
	}
	return fmt.Errorf("%q: scheme %q is not one of %v", redact.URL(raw), u.Scheme, schemes)
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
