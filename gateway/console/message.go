package console

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

// Message is one item of the live stream: Event, Invocation, Log, Sync, Sensor or Firmware.
// The set is closed so that every message has a known wire shape (see API_SHAPES.md).
type Message interface {
	// keys returns what the server-side filters look at; empty means the message has no
	// such field.
	keys() (typ, function, topic string)
	// wire returns the JSON object sent to clients, stamped ts, with the payload limit
	// applied.
	wire(ts int64, maxPayload int) any
	timestamp() int64
}

// The message types, as they appear in the "type" field.
const (
	TypeEvent      = "event"
	TypeInvocation = "invocation"
	TypeLog        = "log"
	TypeSync       = "sync"
	TypeSensor     = "sensor"
	TypeFirmware   = "firmware"
	TypeSkipped    = "skipped"
)

// Event is a message that reached the gateway (MQTT, GPIO edge, sensor reading, timer).
type Event struct {
	TS      int64 // unix ms; zero means the time of Publish
	ID      string
	Source  string
	Topic   string
	Payload []byte // sent as JSON when it is valid JSON, else as a string
	QoS     byte
	// A GPIO edge's pin, the level it left, and "rising" or "falling"; Pin empty for
	// other events.
	Pin   string
	Level int
	Edge  string
	// A sensor reading's sensor and values; Sensor empty for other events.
	Sensor string
	Values map[string]float64
}

// LogLine is one log call made by a function during an invocation, as the invoke API
// answers it.
type LogLine struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
}

// Invocation is the outcome of one run of a function.
type Invocation struct {
	TS         int64
	Function   string
	Version    int
	EventID    string
	Topic      string
	DurationUS int64
	Result     json.RawMessage // nil means the function returned nothing
	Error      string
}

// Log is one log line of a function, published as it happens (its invocation's own
// message comes after it), or a report that Dropped lines were dropped.
type Log struct {
	TS       int64
	Function string
	Version  int
	Level    string
	Msg      string
	EventID  string
	File     string // where in the function's source; empty when unknown
	Line     int
	Dropped  int
}

// Sync is a state transition of a cloud sink.
type Sync struct {
	TS      int64
	Sink    string
	State   string
	Error   string
	LagMS   int64
	Pending int64
}

// Sensor is one reading of a sensor.
type Sensor struct {
	TS     int64
	Sensor string
	Values map[string]float64
}

// Firmware is a device's firmware state change during a rollout.
type Firmware struct {
	TS      int64
	Device  string
	Version string
	Status  string
	Error   string
	Rollout string
}

func (m Event) keys() (string, string, string)      { return TypeEvent, "", m.Topic }
func (m Invocation) keys() (string, string, string) { return TypeInvocation, m.Function, m.Topic }
func (m Log) keys() (string, string, string)        { return TypeLog, m.Function, "" }
func (m Sync) keys() (string, string, string)       { return TypeSync, "", "" }
func (m Sensor) keys() (string, string, string)     { return TypeSensor, "", "" }
func (m Firmware) keys() (string, string, string)   { return TypeFirmware, "", "" }

func (m Event) timestamp() int64      { return m.TS }
func (m Invocation) timestamp() int64 { return m.TS }
func (m Log) timestamp() int64        { return m.TS }
func (m Sync) timestamp() int64       { return m.TS }
func (m Sensor) timestamp() int64     { return m.TS }
func (m Firmware) timestamp() int64   { return m.TS }

func (m Event) wire(ts int64, maxPayload int) any {
	w := struct {
		Type      string             `json:"type"`
		TS        int64              `json:"ts"`
		ID        string             `json:"id"`
		Source    string             `json:"source"`
		Topic     string             `json:"topic"`
		Payload   any                `json:"payload"`
		Truncated bool               `json:"truncated,omitempty"`
		QoS       byte               `json:"qos"`
		Size      int                `json:"size"`
		Pin       string             `json:"pin,omitempty"`
		Level     *int               `json:"level,omitempty"`
		Edge      string             `json:"edge,omitempty"`
		Sensor    string             `json:"sensor,omitempty"`
		Values    map[string]float64 `json:"values,omitempty"`
	}{Type: TypeEvent, TS: ts, ID: m.ID, Source: m.Source, Topic: m.Topic, QoS: m.QoS, Size: len(m.Payload),
		Pin: m.Pin, Edge: m.Edge, Sensor: m.Sensor, Values: m.Values}
	w.Payload, w.Truncated = payloadValue(m.Payload, maxPayload)
	if m.Pin != "" {
		w.Level = &m.Level // 0 is a level, not an absent one
	}
	return w
}

func (m Invocation) wire(ts int64, maxPayload int) any {
	w := struct {
		Type       string `json:"type"`
		TS         int64  `json:"ts"`
		Function   string `json:"function"`
		Version    int    `json:"version"`
		EventID    string `json:"event_id"`
		Topic      string `json:"topic,omitempty"`
		DurationUS int64  `json:"duration_us"`
		Result     any    `json:"result"`
		Error      string `json:"error"`
	}{Type: TypeInvocation, TS: ts, Function: m.Function, Version: m.Version, EventID: m.EventID,
		Topic: m.Topic, DurationUS: m.DurationUS, Error: m.Error}
	if m.Result != nil {
		w.Result, _ = payloadValue(m.Result, maxPayload)
	}
	return w
}

func (m Log) wire(ts int64, _ int) any {
	return struct {
		Type     string `json:"type"`
		TS       int64  `json:"ts"`
		Function string `json:"function"`
		Version  int    `json:"version,omitempty"`
		Level    string `json:"level"`
		Msg      string `json:"msg"`
		EventID  string `json:"event_id,omitempty"`
		File     string `json:"file,omitempty"`
		Line     int    `json:"line,omitempty"`
		Dropped  int    `json:"dropped,omitempty"`
	}{TypeLog, ts, m.Function, m.Version, m.Level, m.Msg, m.EventID, m.File, m.Line, m.Dropped}
}

func (m Sync) wire(ts int64, _ int) any {
	return struct {
		Type    string `json:"type"`
		TS      int64  `json:"ts"`
		Sink    string `json:"sink"`
		State   string `json:"state"`
		Error   string `json:"error"`
		LagMS   int64  `json:"lag_ms"`
		Pending int64  `json:"pending"`
	}{TypeSync, ts, m.Sink, m.State, m.Error, m.LagMS, m.Pending}
}

func (m Sensor) wire(ts int64, _ int) any {
	return struct {
		Type   string `json:"type"`
		TS     int64  `json:"ts"`
		Sensor string `json:"sensor"`
		Values any    `json:"values"`
	}{TypeSensor, ts, m.Sensor, finiteValues(m.Values)}
}

// finiteValues replaces NaN and infinities, which JSON cannot carry, by null; a broken
// sensor must not make its whole reading vanish from the stream.
func finiteValues(v map[string]float64) any {
	for _, f := range v {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			out := make(map[string]*float64, len(v))
			for k, f := range v {
				if !math.IsNaN(f) && !math.IsInf(f, 0) {
					out[k] = &f
				} else {
					out[k] = nil
				}
			}
			return out
		}
	}
	return v
}

func (m Firmware) wire(ts int64, _ int) any {
	return struct {
		Type    string `json:"type"`
		TS      int64  `json:"ts"`
		Device  string `json:"device"`
		Version string `json:"version"`
		Status  string `json:"status"`
		Error   string `json:"error"`
		Rollout string `json:"rollout,omitempty"`
	}{TypeFirmware, ts, m.Device, m.Version, m.Status, m.Error, m.Rollout}
}

// payloadValue returns b as a JSON value when it is valid JSON, else as a string. Bytes past
// max are cut (reporting true), because a browser table has no use for a megabyte payload
// and one such message would fill a client's buffer.
func payloadValue(b []byte, max int) (any, bool) {
	if len(b) > max {
		cut := b[:max]
		// Do not split a UTF-8 sequence: the replacement character would be noise.
		for i := 0; i < utf8.UTFMax && len(cut) > 0 && !utf8.Valid(cut); i++ {
			cut = cut[:len(cut)-1]
		}
		return string(cut), true
	}
	if json.Valid(b) {
		return json.RawMessage(b), false
	}
	return string(b), false
}

// Marshal returns m as the live stream sends it, for APIs that serve live messages from
// before a client connected (the gateway's recent history).
func Marshal(m Message) ([]byte, error) {
	return encode(m, defaultMaxPayload, time.Now)
}

// encode marshals m once for every client that wants it; a zero timestamp becomes now.
func encode(m Message, maxPayload int, now func() time.Time) ([]byte, error) {
	ts := m.timestamp()
	if ts == 0 {
		ts = now().UnixMilli()
	}
	b, err := json.Marshal(m.wire(ts, maxPayload))
	if err != nil {
		typ, _, _ := m.keys()
		return nil, fmt.Errorf("encode live %s message: %w", typ, err)
	}
	return b, nil
}

func skippedJSON(count int64, ts int64) []byte {
	return fmt.Appendf(nil, `{"type":"skipped","ts":%d,"count":%d}`, ts, count)
}
