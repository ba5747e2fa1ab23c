// Package fntest runs function tests offline: no broker, no gateway, no network. A test
// file beside a function (NAME_test.yaml beside NAME.lua) gives events and the state
// before them, and what the function must do; the function runs in the gateway's own
// sandbox (gateway.Sandbox: the same compile, limits and store limits as a deploy), on an
// in-memory KV and a fixed clock, so a test that passes here behaves the same on a Pi.
package fntest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/moongate/moongate/gateway/config"
)

// File is one test file.
type File struct {
	// Function is the .lua file, relative to the test file. Default: the test file's name
	// without _test.yaml, plus .lua.
	Function string `yaml:"function"`
	// Name is the function's name (in logs, and in the config with -c). Default: the
	// .lua file's base name.
	Name string            `yaml:"name"`
	Env  map[string]string `yaml:"env,omitempty"`
	// Emit is the stream the returned values go to, as functions[].emit (with -c, the
	// config entry's when this is empty).
	Emit string `yaml:"emit,omitempty"`
	// Outputs are the pins (or their sensor names) gpio.write may drive, as the config's
	// mode: out sensors (with -c, those are added).
	Outputs []string `yaml:"outputs,omitempty"`
	// Inputs are the levels gpio.read finds, by pin or sensor name.
	Inputs map[string]int `yaml:"inputs,omitempty"`
	// Clock is the time of the first event. Default 2026-01-01T00:00:00Z.
	Clock time.Time      `yaml:"clock"`
	KV    map[string]any `yaml:"kv,omitempty"` // the state before every case
	Cases []Case         `yaml:"cases"`

	path string // of this file
}

// Case is a sequence of events, run in order, each against the KV the previous committed.
type Case struct {
	Name   string         `yaml:"name"`
	KV     map[string]any `yaml:"kv,omitempty"` // added to the file's kv for this case
	Events []Event        `yaml:"events"`
	Expect Expect         `yaml:"expect"`
}

// Event is one event of a case: exactly one of MQTT, GPIO, Sensor, Timer.
type Event struct {
	MQTT   *MQTTEvent   `yaml:"mqtt,omitempty"`
	GPIO   *GPIOEvent   `yaml:"gpio,omitempty"`
	Sensor *SensorEvent `yaml:"sensor,omitempty"`
	Timer  string       `yaml:"timer,omitempty"` // the trigger spec, e.g. every:30s
	// After is how far the clock moves before this event. Default 1s.
	After time.Duration `yaml:"after,omitempty"`
}

type MQTTEvent struct {
	Topic   string `yaml:"topic"`
	Payload any    `yaml:"payload,omitempty"` // a string is the payload's text; anything else, its JSON
	QoS     byte   `yaml:"qos,omitempty"`
}

type GPIOEvent struct {
	Pin   string `yaml:"pin"`
	Level int    `yaml:"level"`
	Edge  string `yaml:"edge"` // rising or falling
}

type SensorEvent struct {
	Name   string             `yaml:"name"`
	Values map[string]float64 `yaml:"values"`
}

// Expect is what the case's events must have done, together; a field left out is not
// checked. Maps and objects match partially (the keys given); lists, strings and numbers
// exactly.
type Expect struct {
	Publishes *[]Publish `yaml:"publishes,omitempty"` // every publish, in order; [] for none
	Emits     *[]Emit    `yaml:"emits,omitempty"`     // every record emitted (cloud.emit, and emit: of the returned value)
	// GPIOWrites are every gpio.write, in order; [] for none.
	GPIOWrites *[]PinWrite `yaml:"gpio_writes,omitempty"`
	// KV is the state after the last event: each key given must hold the value; a key
	// given as null must be absent.
	KV     map[string]any `yaml:"kv,omitempty"`
	Result *Value         `yaml:"result,omitempty"` // what the last event's handle returned; null for nil
	Logs   []string       `yaml:"logs,omitempty"`   // substrings of log lines, in order
	// Error is the error the last event must fail with; without it every event must
	// succeed.
	Error *ExpectError `yaml:"error,omitempty"`
}

// Value wraps an expected value so that null can be told from absent.
type Value struct{ V any }

func (v *Value) UnmarshalYAML(n *yaml.Node) error { return n.Decode(&v.V) }
func (v Value) MarshalYAML() (any, error)         { return v.V, nil }

type Publish struct {
	Topic   string `yaml:"topic"`
	Payload *Value `yaml:"payload"`
	QoS     *byte  `yaml:"qos"`
	Retain  *bool  `yaml:"retain"`
}

type PinWrite struct {
	Pin   string `yaml:"pin"`
	Level int    `yaml:"level"`
}

type Emit struct {
	Stream string `yaml:"stream"`
	Data   *Value `yaml:"data"`
}

type ExpectError struct {
	Kind    string `yaml:"kind,omitempty"`    // runtime, timeout, memory, depth, registry, pattern, result
	Line    int    `yaml:"line,omitempty"`    // the Lua line it failed at
	Message string `yaml:"message,omitempty"` // a substring of the message
}

// Load reads and checks a test file: errors name the file, the line and the key.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse checks a test file's text as Load does; path names it in errors and results (and
// places the .lua file, for Runner.Run).
func Parse(path string, data []byte) (*File, error) {
	f := &File{path: path}
	if err := config.DecodeYAML(path, data, f); err != nil {
		return nil, err
	}
	var errs config.ErrorList
	bad := func(key, format string, args ...any) {
		errs = append(errs, &config.Error{File: path, Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if f.Function == "" {
		f.Function = strings.TrimSuffix(filepath.Base(path), "_test.yaml") + ".lua"
	}
	if f.Name == "" {
		f.Name = strings.TrimSuffix(filepath.Base(f.Function), ".lua")
	}
	if f.Clock.IsZero() {
		f.Clock = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if len(f.Cases) == 0 {
		bad("cases", "no test cases")
	}
	for i, c := range f.Cases {
		key := fmt.Sprintf("cases[%d]", i)
		if c.Name == "" {
			bad(key+".name", "required")
		}
		if len(c.Events) == 0 {
			bad(key+".events", "no events")
		}
		for j, ev := range c.Events {
			n := 0
			for _, set := range []bool{ev.MQTT != nil, ev.GPIO != nil, ev.Sensor != nil, ev.Timer != ""} {
				if set {
					n++
				}
			}
			if n != 1 {
				bad(fmt.Sprintf("%s.events[%d]", key, j), "want exactly one of mqtt, gpio, sensor, timer")
			}
			if ev.MQTT != nil && ev.MQTT.Topic == "" {
				bad(fmt.Sprintf("%s.events[%d].mqtt.topic", key, j), "required")
			}
		}
		if e := c.Expect.Error; e != nil && e.Kind != "" {
			if _, ok := errorKinds[e.Kind]; !ok {
				bad(key+".expect.error.kind", "%q is not one of %s", e.Kind, kindNames())
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return f, nil
}

// source is the function's .lua file.
func (f *File) source() string { return filepath.Join(filepath.Dir(f.path), f.Function) }

// payload is an MQTT event's payload on the wire.
func (e *MQTTEvent) payload() ([]byte, error) {
	switch p := e.Payload.(type) {
	case nil:
		return nil, nil
	case string:
		return []byte(p), nil
	default:
		return json.Marshal(jsonable(p))
	}
}

// jsonable turns what YAML decoded (map[string]any, but also map[any]any in nested
// places) into what encoding/json takes.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonable(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonable(e)
		}
		return out
	}
	return v
}
