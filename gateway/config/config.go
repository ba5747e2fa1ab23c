// Package config reads moongate.yaml (SPEC §3): strict YAML, ${VAR} expansion, defaults,
// and validation whose every error names the file, the line and the key.
package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/moongate/moongate/sync/sink"
)

// Config is a whole moongate.yaml.
type Config struct {
	Gateway Gateway `yaml:"gateway"`
	MQTT    MQTT    `yaml:"mqtt"`
	// Fleet: desired state from the cloud broker (package fleet).
	Fleet     Fleet                `yaml:"fleet"`
	Sensors   map[string]yaml.Node `yaml:"sensors"` // decoded by the sensors package's own type, see DecodeStrict
	Functions []Function           `yaml:"functions"`
	Sync      Sync                 `yaml:"sync"`
	// HomeAssistant: MQTT discovery of the sensors, pins and function outputs.
	HomeAssistant HomeAssistant `yaml:"homeassistant"`
	// Firmware: signed over-the-air updates of the devices.
	Firmware Firmware `yaml:"firmware"`

	// File is the path the config was read from, "" for built-in defaults. Relative paths in
	// the config (function sources, TLS files) are relative to its directory.
	File string `yaml:"-"`
	src  *source
}

// Values of gateway.durability, and the default and bounds of gateway.batch_interval.
const (
	DurabilitySync       = "sync"
	DurabilityBatch      = "batch"
	DefaultBatchInterval = 5 * time.Second
	MinBatchInterval     = 10 * time.Millisecond
	MaxBatchInterval     = time.Minute
)

// Gateway holds the gateway's own settings.
type Gateway struct {
	ID      string  `yaml:"id"`       // default: the hostname
	DataDir string  `yaml:"data_dir"` // default: ./moongate-data
	Console Console `yaml:"console"`
	// AllowMissingHardware lets the gateway start when a sensor's bus or pin is absent; the
	// sensor then reports its error in the console instead of stopping the start.
	AllowMissingHardware bool   `yaml:"allow_missing_hardware"`
	LogLevel             string `yaml:"log_level"` // debug, info (default), warn, error
	// MemoryLimit is the Go runtime's soft memory limit. The store's pooled table buffers
	// otherwise let RSS grow past what a Pi Zero can spare; the GOMEMLIMIT environment
	// variable overrides it. Default 48MiB: under heavy durable load Badger's table
	// builders alone hold about 16 MiB, and at 32MiB the collector ran back to back and
	// cut the durable rate by a tenth (by half at one message in flight per device).
	// "0" turns it off.
	MemoryLimit *Size `yaml:"memory_limit"`
	// Durability is "sync" (default): every invocation's commit is synced before it
	// returns; or "batch": the commits of events nobody waits for (QoS 0 messages,
	// sensor readings, gpio edges, timers) are synced together at most every
	// BatchInterval, which writes far fewer pages to an SD card, and a power loss can
	// take what they committed in the last BatchInterval. QoS 1 messages keep their
	// guarantee in both: their ack waits for the sync of their commit.
	Durability string `yaml:"durability"`
	// BatchInterval is the longest a batch-mode commit waits for its sync. Default 5s:
	// ext4's own journal commit interval, and measured at 10 KV writes a second, 0.75 GB
	// written a day where 1s wrote 1.75 GB (each sync costs ext4 a journal commit).
	BatchInterval time.Duration `yaml:"batch_interval"`
	// Ceilings bound what any deploy may ask of a function (see Ceilings).
	Ceilings Ceilings `yaml:"ceilings"`
	// Loops bound what functions publishing to each other's triggers can do (see Loops).
	Loops Loops `yaml:"loops"`
	// KVQuota bounds each function's KV (see KVQuota).
	KVQuota KVQuota `yaml:"kv_quota"`
	// VersionHistory is how many versions of each function are kept (the newest); older
	// ones are deleted at each deploy. Default DefaultVersionHistory.
	VersionHistory int   `yaml:"version_history"`
	Debug          Debug `yaml:"debug"`
}

// Debug holds switches for looking inside a running gateway.
type Debug struct {
	// Pprof serves Go's profiles (net/http/pprof) under /debug/pprof/ on the console
	// listener, behind its token, so a slow gateway can be profiled where it runs:
	// go tool pprof http://pi:8080/debug/pprof/profile?seconds=30
	Pprof bool `yaml:"pprof"`
}

// Console is the HTTP API and websocket listener.
type Console struct {
	Listen string `yaml:"listen"` // default 127.0.0.1:8080
	// Token is the bearer token for the API. It is required whenever Listen is not a
	// loopback address; "generate" makes the gateway create one in the data dir on first start.
	Token string `yaml:"token"`
	// Hosts are the host names the console answers to besides IP addresses, localhost and
	// this machine's hostname (and hostname.local): a request naming another host is
	// refused, which is what stops DNS rebinding.
	Hosts []string `yaml:"hosts"`
	// AllowedOrigins are the browser origins ("https://ops.example.com") besides the
	// console's own that may change state through the API and open the live stream.
	AllowedOrigins []string `yaml:"allowed_origins"`
}

// MQTT selects the bus: the embedded broker or an external one.
type MQTT struct {
	Broker   string   `yaml:"broker"` // "embedded" (default) or tcp://, ssl://, ws://, wss:// URL
	Embedded Embedded `yaml:"embedded"`
	ClientID string   `yaml:"client_id"` // external broker: default "moongate-" + gateway id
	Username string   `yaml:"username"`
	Password string   `yaml:"password"`
	TLS      TLS      `yaml:"tls"`
}

// Embedded configures the embedded broker's listeners and who may use them.
type Embedded struct {
	// Listen is where devices connect: default 127.0.0.1:1883, this machine only. Beyond
	// loopback, devices must authenticate (PasswordFile, or mqtt.username) unless
	// AllowAnonymous says otherwise.
	Listen   string `yaml:"listen"`
	WSListen string `yaml:"ws_listen"` // optional MQTT over websocket listener
	// WSAllowedOrigins are the browser origins besides the websocket listener's own whose
	// pages may connect to it ("*": any).
	WSAllowedOrigins []string `yaml:"ws_allowed_origins"`
	// TLSListen also accepts devices over TLS (ssl://) with TLS's certificate and key;
	// with TLS.ClientCA every device must present a certificate that CA signed, whose
	// common name is then its user (the ACL's %u).
	TLSListen string      `yaml:"tls_listen"`
	TLS       EmbeddedTLS `yaml:"tls"`
	// PasswordFile holds the devices' users and bcrypt hashes (moongate passwd writes
	// it); ACLFile says what each may publish and subscribe to, in Mosquitto's format.
	// Both are reloaded when they change, and on SIGHUP.
	PasswordFile string `yaml:"password_file"`
	ACLFile      string `yaml:"acl_file"`
	// AllowAnonymous lets any device on the network connect without credentials to a
	// listener beyond loopback. Logged as a warning at every start.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// MaxPacketSize is the largest packet a device may send; a larger one disconnects the
	// device, logged and counted. Unset: the broker's default, 256KiB.
	MaxPacketSize Size `yaml:"max_packet_size"`
	// DeviceRate and DeviceByteRate are each device's fair share of the broker, in
	// publishes and payload bytes a second: a device past them is slowed down (its
	// connection is not read for a moment), the others are not. Unset: 2000 and 1MiB;
	// device_rate: -1 turns both off.
	DeviceRate     float64 `yaml:"device_rate"`
	DeviceByteRate Size    `yaml:"device_byte_rate"`
}

// EmbeddedTLS names the embedded broker's TLS listener's PEM files.
type EmbeddedTLS struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"`
}

// TLS names PEM files; empty fields are unused.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Function is one entry of functions:.
type Function struct {
	Name        string            `yaml:"name"`
	Source      string            `yaml:"source"`
	Triggers    []string          `yaml:"triggers"`
	Timeout     time.Duration     `yaml:"timeout"`     // default DefaultFunctionTimeout
	Memory      Size              `yaml:"memory"`      // default DefaultFunctionMemory
	Concurrency int               `yaml:"concurrency"` // default DefaultFunctionConcurrency
	Retries     *int              `yaml:"retries"`     // QoS 1 events: tries after the first; default DefaultFunctionRetries
	Env         map[string]string `yaml:"env"`
	Emit        string            `yaml:"emit"`
	Overflow    string            `yaml:"overflow"` // OverflowBlock (default) or OverflowDropOldest
	Outputs     []Output          `yaml:"outputs"`  // values it publishes, for Home Assistant

	// Parsed is Triggers, parsed and checked by Load.
	Parsed []Trigger `yaml:"-"`
	// Code is the content of Source, read by Load.
	Code string `yaml:"-"`
}

// Sync configures the outbox and the sinks that drain it.
type Sync struct {
	Outbox Outbox `yaml:"outbox"`
	Sinks  []Sink `yaml:"sinks"`
}

// Outbox bounds what waits for the cloud.
type Outbox struct {
	MaxBytes Size          `yaml:"max_bytes"` // default 256MiB
	TTL      time.Duration `yaml:"ttl"`       // default 168h
	OnFull   string        `yaml:"on_full"`   // drop_oldest (default) or reject_new
	// MaxStreamBytes bounds one stream's share; 0 (default): none of its own.
	MaxStreamBytes Size `yaml:"max_stream_bytes"`
}

// Sink is one cloud destination; exactly one of HTTP, MQTT and JetStream is set.
type Sink struct {
	Name      string         `yaml:"name"`
	Streams   []string       `yaml:"streams"` // default ["*"]
	HTTP      *HTTPSink      `yaml:"http"`
	MQTT      *MQTTSink      `yaml:"mqtt"`
	JetStream *JetStreamSink `yaml:"jetstream"`
	Batch     Batch          `yaml:"batch"`
}

// JetStreamSink publishes records to a NATS JetStream stream.
type JetStreamSink struct {
	URL     string        `yaml:"url"`     // nats:// or tls://, comma-separated for a cluster
	Subject string        `yaml:"subject"` // template: {gateway}, {stream}, {function}
	TLS     TLS           `yaml:"tls"`
	Creds   string        `yaml:"creds"`
	Window  int           `yaml:"window"` // publishes awaiting their PubAck
	Timeout time.Duration `yaml:"timeout"`
}

// HTTPSink posts JSON batches (SPEC §7).
type HTTPSink struct {
	URL         string            `yaml:"url"`
	Headers     map[string]string `yaml:"headers"`
	HMACSecret  string            `yaml:"hmac_secret"`
	CA          string            `yaml:"ca"`
	Timeout     time.Duration     `yaml:"timeout"`
	Gzip        string            `yaml:"gzip"`   // auto (default), on, off
	Format      string            `yaml:"format"` // moongate (default) or cloudevents
	CloudEvents CloudEvents       `yaml:"cloudevents"`
	Auth        HTTPAuth          `yaml:"auth"`
}

// HTTPAuth authenticates an HTTP sink's requests; at most one is set.
type HTTPAuth struct {
	AWSSigV4      *AWSSigV4      `yaml:"aws_sigv4"`
	OAuth2        *OAuth2        `yaml:"oauth2_client_credentials"`
	GoogleIDToken *GoogleIDToken `yaml:"google_id_token"`
}

// AWSSigV4 signs requests for AWS (a Lambda function URL with IAM auth).
type AWSSigV4 struct {
	Region          string `yaml:"region"`
	Service         string `yaml:"service"` // default lambda
	AccessKeyID     string `yaml:"access_key_id"`
	SecretAccessKey string `yaml:"secret_access_key"`
	SessionToken    string `yaml:"session_token"`
	Profile         string `yaml:"profile"`
}

// OAuth2 is the OAuth 2.0 client credentials grant.
type OAuth2 struct {
	TokenURL         string   `yaml:"token_url"`
	ClientID         string   `yaml:"client_id"`
	ClientSecret     string   `yaml:"client_secret"`
	ClientSecretFile string   `yaml:"client_secret_file"`
	Scopes           []string `yaml:"scopes"`
}

// GoogleIDToken mints Google ID tokens from a service account key file.
type GoogleIDToken struct {
	Audience        string `yaml:"audience"`
	CredentialsFile string `yaml:"credentials_file"`
}

// CloudEvents shapes the events of an HTTP sink with format: cloudevents.
type CloudEvents struct {
	Mode  string            `yaml:"mode"`  // batched (default), structured, binary
	Type  string            `yaml:"type"`  // default io.moongate.record
	Types map[string]string `yaml:"types"` // stream -> type
}

// MQTTSink bridges records to a cloud broker.
type MQTTSink struct {
	Broker   string `yaml:"broker"`
	Topic    string `yaml:"topic"` // template: {gateway}, {stream}, {function}
	QoS      int    `yaml:"qos"`
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	TLS      TLS    `yaml:"tls"`
	Window   int    `yaml:"window"` // QoS 1 messages in flight
}

// Batch bounds one delivery.
type Batch struct {
	MaxRecords int           `yaml:"max_records"` // default 500
	MaxBytes   Size          `yaml:"max_bytes"`   // default 256KiB
	Linger     time.Duration `yaml:"linger"`      // default 1s
}

// Default is the configuration used when there is no config file: an embedded broker and
// the console, no functions.
func Default() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

// Load reads and validates path. On any problem it returns an ErrorList holding every
// error found, each with file, line and key.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load on bytes already read; path names them in errors and anchors relative paths.
func Parse(path string, data []byte) (*Config, error) {
	src, errs := parseSource(path, data)
	if src == nil {
		return nil, errs.err()
	}
	c := &Config{File: path, src: src}
	errs = append(errs, src.decode(src.root, "", c)...)
	c.applyDefaults()
	errs = append(errs, c.validate()...)
	return c, errs.sorted().err()
}

// Resolve makes a path from the config relative to the config file's directory.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) || c.File == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// DecodeStrict decodes a node kept raw in the config (a sensor entry) into v, rejecting
// unknown keys. Errors carry file, line and the key path under key.
func (c *Config) DecodeStrict(node *yaml.Node, key string, v any) error {
	if c.src == nil {
		return node.Decode(v)
	}
	return c.src.decode(node, key, v).sorted().err()
}

// Errorf makes an error located at the key path (e.g. "functions[0].triggers[1]").
func (c *Config) Errorf(key, format string, args ...any) *Error {
	e := &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
	if c.src != nil {
		e.File = c.src.file
		e.Line = c.src.lineOf(key)
		c.src.explain(e)
	}
	return e
}

func (c *Config) applyDefaults() {
	g := &c.Gateway
	if g.ID == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			g.ID = h
		} else {
			g.ID = "moongate"
		}
	}
	if g.DataDir == "" {
		g.DataDir = "./moongate-data"
	}
	if g.Console.Listen == "" {
		g.Console.Listen = "127.0.0.1:8080"
	}
	if g.LogLevel == "" {
		g.LogLevel = "info"
	}
	if g.Durability == "" {
		g.Durability = DurabilitySync
	}
	if g.BatchInterval == 0 {
		g.BatchInterval = DefaultBatchInterval
	}
	if g.MemoryLimit == nil {
		l := Size(48 << 20)
		g.MemoryLimit = &l
	}
	if c.MQTT.Broker == "" {
		c.MQTT.Broker = "embedded"
	}
	if c.MQTT.Embedded.Listen == "" {
		c.MQTT.Embedded.Listen = "127.0.0.1:1883"
	}
	if c.MQTT.ClientID == "" {
		c.MQTT.ClientID = "moongate-" + g.ID
	}
	g.Ceilings.withDefaults()
	g.Loops.withDefaults()
	g.KVQuota.withDefaults()
	c.HomeAssistant.withDefaults()
	c.Firmware.withDefaults()
	if g.VersionHistory == 0 {
		g.VersionHistory = DefaultVersionHistory
	}
	for i := range c.Functions {
		f := &c.Functions[i]
		if f.Timeout == 0 {
			f.Timeout = DefaultFunctionTimeout
		}
		if f.Memory == 0 {
			f.Memory = DefaultFunctionMemory
		}
		if f.Concurrency == 0 {
			f.Concurrency = DefaultFunctionConcurrency
		}
		if f.Retries == nil {
			n := DefaultFunctionRetries
			f.Retries = &n
		}
	}
	o := &c.Sync.Outbox
	if o.MaxBytes == 0 {
		o.MaxBytes = 256 << 20
	}
	if o.TTL == 0 {
		o.TTL = 168 * time.Hour
	}
	if o.OnFull == "" {
		o.OnFull = "drop_oldest"
	}
	for i := range c.Sync.Sinks {
		s := &c.Sync.Sinks[i]
		if len(s.Streams) == 0 {
			s.Streams = []string{"*"}
		}
		// The sink owns its defaults; the config shows them.
		if s.Batch.MaxRecords == 0 {
			s.Batch.MaxRecords = sink.DefaultMaxRecords
		}
		if s.Batch.MaxBytes == 0 {
			s.Batch.MaxBytes = sink.DefaultMaxBytes
		}
		if s.Batch.Linger == 0 {
			s.Batch.Linger = sink.DefaultLinger
		}
		if s.MQTT != nil && s.MQTT.ClientID == "" {
			s.MQTT.ClientID = "moongate-" + g.ID + "-" + s.Name
		}
	}
}

// IsLoopback reports whether a listen address only accepts local connections.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
