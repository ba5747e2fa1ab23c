package sink

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/moongate/moongate/internal/tlsfiles"
)

// Config describes one sink. Exactly one of HTTP, MQTT and JetStream is set. Zero fields
// take the defaults named beside them.
type Config struct {
	// Name identifies the sink; it is also its consumer name in the store, so
	// renaming a sink starts it over from the oldest record.
	Name string
	// Streams are the streams the sink takes: stream names, or "*" for
	// every stream whose name does not start with "$" (so not "$dead"; name
	// it to take it). The store matches consumers the same way. Default ["*"].
	Streams   []string
	HTTP      *HTTPConfig
	MQTT      *MQTTConfig
	JetStream *JetStreamConfig
	Batch     Batch
	// GatewayID goes into every HTTP batch and the MQTT topic template.
	GatewayID string
	// Disabled keeps the sink configured but idle: Run registers nothing and
	// waits for its context; Status reports "disabled".
	Disabled bool
	// Clock is the time of the sink's state, lag, linger and backoff. Nil: the real
	// clock. Network deadlines and timeouts are the real clock's always.
	Clock   Clock
	Backoff Backoff
	// Window is the number of batches in flight per stream. Default 4 for
	// HTTP (requests pipelined on one connection) and JetStream, 2 for MQTT
	// (whose flow control is MQTTConfig.Window, in messages; JetStream's is
	// JetStreamConfig.Window). 1 sends a batch only after the previous one
	// was acknowledged.
	Window int
	// AckInterval bounds how often a lane writes its cursor to the store.
	// Default 200ms. A crash resends at most this much more.
	AckInterval time.Duration
	// OnTransition, if set, is called with the new status each time the
	// sink's state changes, from a sink goroutine: it must not block.
	OnTransition func(Status)
}

// Batch bounds an HTTP batch. For the MQTT bridge a batch is only the unit
// the cursor moves by; every record is its own PUBLISH.
type Batch struct {
	MaxRecords int // default 500
	MaxBytes   int // request body before gzip; default 256 KiB; a larger single record is sent alone
	// Linger is how long a batch that is not full waits for more records.
	// Default 1s for HTTP and none for MQTT; negative means none.
	Linger time.Duration
}

// Backoff is exponential backoff with full jitter: the n-th retry in a row
// waits a random time in [0, min(Cap, Base*2^n)).
type Backoff struct {
	Base time.Duration // default 500ms
	Cap  time.Duration // default 1m
}

// HTTPConfig is an HTTP(S) receiver (SPEC §7).
type HTTPConfig struct {
	URL        string
	Headers    map[string]string // sent with every request, e.g. Authorization
	HMACSecret string            // when set, X-Moongate-Signature signs every body
	// CAFile is a PEM bundle trusted in addition to the system roots.
	CAFile string
	// CertFile and KeyFile are an optional client certificate (mutual TLS).
	CertFile, KeyFile string
	// Timeout bounds dialing and each request: its response must start and
	// end within Timeout of the request being written (or of the previous
	// response on the connection, when pipelined). Default 30s.
	Timeout time.Duration
	// Gzip is "auto" (default), "on" or "off"; see the package doc.
	Gzip string
	// Format is the body: FormatMoongate (default, SPEC §7) or
	// FormatCloudEvents, shaped by CloudEvents.
	Format      string
	CloudEvents CloudEventsConfig
	Auth        HTTPAuth
}

// Formats of HTTPConfig.Format.
const (
	FormatMoongate    = "moongate"
	FormatCloudEvents = "cloudevents"
)

// encoder returns the body encoder of one stream's batches.
func (h *HTTPConfig) encoder(gateway, stream string) bodyEncoder {
	if h.Format == FormatCloudEvents {
		return newCEEncoder(gateway, stream, &h.CloudEvents)
	}
	return newEncoder(gateway, stream)
}

// MQTTConfig is a cloud MQTT broker the sink bridges records to, on its own
// connection.
type MQTTConfig struct {
	Broker string // tcp://, ssl://, tls://, mqtts://, ws://, wss://
	// Topic is the topic template; {gateway}, {stream} and {function} are
	// replaced (with '+' and '#' in the values replaced by '_').
	// Default "{gateway}/{stream}".
	Topic string
	// QoS is always 1: a record leaves the outbox only after the broker's
	// PUBACK, which QoS 0 does not have. 0 means 1; other values are errors.
	QoS      byte
	ClientID string // default "moongate-{gateway}-{name}"
	Username string
	Password string
	TLS      TLSFiles
	// Window is the number of QoS 1 PUBLISHes outstanding on the connection
	// (sent, PUBACK not yet received). Default 100 (AWS IoT Core's limit).
	Window int
	// Timeout bounds connecting and each PUBACK. Default 30s.
	Timeout time.Duration
	// KeepAlive is the MQTT keep-alive. Default 30s.
	KeepAlive time.Duration
}

// TLSFiles names PEM files; empty fields are unused (see tlsfiles).
type TLSFiles = tlsfiles.Files

// Default values.
const (
	DefaultMaxRecords  = 500
	DefaultMaxBytes    = 256 << 10
	DefaultLinger      = time.Second
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffCap  = time.Minute
	DefaultAckInterval = 200 * time.Millisecond
	DefaultTimeout     = 30 * time.Second
	DefaultMQTTWindow  = 100
	DefaultTopic       = "{gateway}/{stream}"
)

// Clock is a sink's time source (the gateway's Clock has the same methods).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	var errs []error
	if cfg.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if len(cfg.Streams) == 0 {
		cfg.Streams = []string{"*"}
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	kinds := 0
	for _, set := range []bool{cfg.HTTP != nil, cfg.MQTT != nil, cfg.JetStream != nil} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		errs = append(errs, errors.New("exactly one of http, mqtt and jetstream must be set"))
	}
	if cfg.Batch.MaxRecords <= 0 {
		cfg.Batch.MaxRecords = DefaultMaxRecords
	}
	if cfg.Batch.MaxBytes <= 0 {
		cfg.Batch.MaxBytes = DefaultMaxBytes
	}
	if cfg.Batch.Linger == 0 && cfg.HTTP != nil {
		cfg.Batch.Linger = DefaultLinger
	}
	if cfg.Batch.Linger < 0 {
		cfg.Batch.Linger = 0
	}
	if cfg.Backoff.Base <= 0 {
		cfg.Backoff.Base = DefaultBackoffBase
	}
	if cfg.Backoff.Cap <= 0 {
		cfg.Backoff.Cap = DefaultBackoffCap
	}
	if cfg.Backoff.Cap < cfg.Backoff.Base {
		cfg.Backoff.Cap = cfg.Backoff.Base
	}
	if cfg.AckInterval <= 0 {
		cfg.AckInterval = DefaultAckInterval
	}
	if cfg.Window <= 0 {
		cfg.Window = 4
		if cfg.MQTT != nil {
			cfg.Window = 2
		}
	}
	if cfg.HTTP != nil {
		h := *cfg.HTTP
		if h.Timeout <= 0 {
			h.Timeout = DefaultTimeout
		}
		switch h.Gzip {
		case "":
			h.Gzip = "auto"
		case "auto", "on", "off":
		default:
			errs = append(errs, fmt.Errorf("http: gzip %q: want auto, on or off", h.Gzip))
		}
		u, err := url.Parse(h.URL)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("http: url: %w", err))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("http: url %q: scheme must be http or https", h.URL))
		case u.Host == "":
			errs = append(errs, fmt.Errorf("http: url %q: no host", h.URL))
		}
		if (h.CertFile == "") != (h.KeyFile == "") {
			errs = append(errs, errors.New("http: cert_file and key_file go together"))
		}
		switch h.Format {
		case "":
			h.Format = FormatMoongate
		case FormatMoongate, FormatCloudEvents:
		default:
			errs = append(errs, fmt.Errorf("http: format %q: want moongate or cloudevents", h.Format))
		}
		ce := h.CloudEvents
		switch ce.Mode {
		case "":
			ce.Mode = CEBatched
		case CEBatched:
		case CEStructured, CEBinary:
			if h.Format == FormatCloudEvents {
				cfg.Batch.MaxRecords = 1 // one event per request
			}
		default:
			errs = append(errs, fmt.Errorf("http: cloudevents mode %q: want batched, structured or binary", ce.Mode))
		}
		if ce.Type == "" {
			ce.Type = DefaultCEType
		}
		h.CloudEvents = ce
		if err := h.Auth.check(); err != nil {
			errs = append(errs, fmt.Errorf("http: auth: %w", err))
		}
		if a := h.Auth.AWSSigV4; a != nil && a.Service == "" {
			sv := *a
			sv.Service = "lambda"
			h.Auth.AWSSigV4 = &sv
		}
		cfg.HTTP = &h
	}
	if cfg.MQTT != nil {
		m := *cfg.MQTT
		if m.Broker == "" {
			errs = append(errs, errors.New("mqtt: broker is empty"))
		}
		if m.Topic == "" {
			m.Topic = DefaultTopic
		}
		if strings.ContainsAny(m.Topic, "+#") {
			errs = append(errs, fmt.Errorf("mqtt: topic %q: wildcards cannot be published to", m.Topic))
		}
		if m.QoS > 1 {
			errs = append(errs, fmt.Errorf("mqtt: qos %d: only 1 is supported", m.QoS))
		}
		m.QoS = 1
		if m.ClientID == "" {
			m.ClientID = "moongate-" + cfg.GatewayID + "-" + cfg.Name
		}
		if m.Window <= 0 {
			m.Window = DefaultMQTTWindow
		}
		if m.Timeout <= 0 {
			m.Timeout = DefaultTimeout
		}
		if m.KeepAlive <= 0 {
			m.KeepAlive = 30 * time.Second
		}
		if (m.TLS.Cert == "") != (m.TLS.Key == "") {
			errs = append(errs, errors.New("mqtt: tls cert and key go together"))
		}
		cfg.MQTT = &m
	}
	if cfg.JetStream != nil {
		j := *cfg.JetStream
		if j.URL == "" {
			errs = append(errs, errors.New("jetstream: url is empty"))
		}
		if j.Subject == "" {
			j.Subject = DefaultJetStreamSubject
		}
		if strings.ContainsAny(j.Subject, "*> \t") {
			errs = append(errs, fmt.Errorf("jetstream: subject %q: wildcards and spaces cannot be published to", j.Subject))
		}
		if j.Window <= 0 {
			j.Window = DefaultJetStreamWindow
		}
		if j.Timeout <= 0 {
			j.Timeout = DefaultJetStreamTimeout
		}
		if (j.TLS.Cert == "") != (j.TLS.Key == "") {
			errs = append(errs, errors.New("jetstream: tls cert and key go together"))
		}
		cfg.JetStream = &j
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("sink %s: %w", cfg.Name, errors.Join(errs...))
	}
	return cfg, nil
}
