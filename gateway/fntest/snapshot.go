package fntest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/luafn"
)

// Record is one line of `moongate record` (events.jsonl): an event that reached a
// function, as the invoke API takes it.
type Record struct {
	TS       int64       `json:"ts"` // unix ms, when the event reached the gateway
	Function string      `json:"function"`
	Event    RecordEvent `json:"event"`
}

// RecordEvent is the body of POST /api/v1/functions/{name}/invoke: a JSON string payload
// is the payload's text, anything else its JSON.
type RecordEvent struct {
	ID      string             `json:"id,omitempty"`
	Source  string             `json:"source"`
	TS      int64              `json:"ts"`
	Topic   string             `json:"topic,omitempty"`
	Payload json.RawMessage    `json:"payload,omitempty"`
	QoS     byte               `json:"qos,omitempty"`
	Pin     string             `json:"pin,omitempty"`
	Level   int                `json:"level,omitempty"`
	Edge    string             `json:"edge,omitempty"`
	Sensor  string             `json:"sensor,omitempty"`
	Values  map[string]float64 `json:"values,omitempty"`
}

// testEvent is r's event in a test file; ok false for an event a test cannot give (an API
// invocation without a topic).
func (r RecordEvent) testEvent() (Event, bool, error) {
	switch {
	case r.Source == "gpio" || r.Pin != "":
		return Event{GPIO: &GPIOEvent{Pin: r.Pin, Level: r.Level, Edge: r.Edge}}, true, nil
	case r.Source == "sensor" || r.Sensor != "":
		return Event{Sensor: &SensorEvent{Name: r.Sensor, Values: r.Values}}, true, nil
	case r.Source == "timer":
		return Event{Timer: r.Topic}, true, nil
	case r.Topic != "":
		var p any
		if len(r.Payload) > 0 {
			if err := json.Unmarshal(r.Payload, &p); err != nil {
				return Event{}, false, fmt.Errorf("payload: %w", err)
			}
		}
		switch p.(type) {
		case map[string]any, []any, string, nil:
			p = tidy(p)
		default: // a number or a boolean: its text as it came (21.0 stays 21.0)
			p = string(r.Payload)
		}
		return Event{MQTT: &MQTTEvent{Topic: r.Topic, Payload: p, QoS: r.QoS}}, true, nil
	}
	return Event{}, false, nil
}

// Snapshot turns recorded events into a test file for fn: one case per event, each on an
// empty KV, expecting what the function does with it today in the sandbox (publishes,
// emits, GPIO writes, the KV after, the result, or the error's kind and line). fn is the
// function as the gateway runs it (Code, env, emit, limits); the file names its source by
// base name, so it goes beside the .lua, and lists the config's output pins (cfg may be
// nil). The file is run once before it is returned: a function whose outputs are not
// reproducible (math.random, say) is an error.
func Snapshot(cfg *config.Config, fn config.Function, records []Record) ([]byte, error) {
	if len(records) == 0 {
		return nil, errors.New("no recorded events")
	}
	f := &File{Function: filepath.Base(fn.Source), Name: fn.Name, Env: fn.Env, Emit: fn.Emit,
		Clock: time.UnixMilli(records[0].TS).UTC(), path: strings.TrimSuffix(filepath.Base(fn.Source), ".lua") + "_test.yaml"}
	f.Outputs = (&Runner{Config: cfg}).outputs(&File{})
	var r Runner
	entry := overrides(f, &fn)
	out := *f // what is written: f's settings and the cases
	for i, rec := range records {
		ev, ok, err := rec.Event.testEvent()
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i+1, err)
		}
		if !ok {
			continue
		}
		c := Case{Name: fmt.Sprintf("recorded %d: %s", i+1, describe(ev)), Events: []Event{ev}}
		got, kv, err, diffs := r.observe(f, entry, c)
		if kv == nil {
			return nil, fmt.Errorf("event %d: %s", i+1, strings.Join(diffs, "; "))
		}
		c.Expect = expectOf(got, kv, err)
		out.Cases = append(out.Cases, c)
	}
	if len(out.Cases) == 0 {
		return nil, errors.New("no recorded event can be a test event (API invocations without a topic)")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s: %d recorded events (moongate test --snapshot), expecting what the function did\n# with each in the sandbox, on an empty KV. Save it beside %s.\n", f.path, len(out.Cases), f.Function)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	// The file must pass as it is: a check of the encoding, and of the function's
	// determinism.
	check, err := Parse(f.path, b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("the snapshot does not parse: %w", err)
	}
	for _, res := range r.RunFunction(check, fn) {
		if !res.OK {
			return nil, fmt.Errorf("the snapshot does not pass on a second run (does the function depend on chance?): %s: %s",
				res.Case, strings.Join(res.Diffs, "; "))
		}
	}
	return b.Bytes(), nil
}

// tidy writes whole numbers that JSON decoded as float64 as integers, so the YAML reads
// 1796185216775, not 1.796185216775e+12.
func tidy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = tidy(e)
		}
	case []any:
		for i, e := range x {
			x[i] = tidy(e)
		}
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x)
		}
	}
	return v
}

func describe(e Event) string {
	switch {
	case e.MQTT != nil:
		return "mqtt " + e.MQTT.Topic
	case e.GPIO != nil:
		return fmt.Sprintf("gpio %s %s", e.GPIO.Pin, e.GPIO.Edge)
	case e.Sensor != nil:
		return "sensor " + e.Sensor.Name
	}
	return e.Timer
}

// expectOf is what a case expects of what the function did: every list given, [] for
// none, so that a new publish, emit or write shows as a change.
func expectOf(got observed, kv *memKV, err error) Expect {
	pubs, emits, writes := []Publish{}, []Emit{}, []PinWrite{}
	e := Expect{Publishes: &pubs, Emits: &emits, GPIOWrites: &writes}
	for _, p := range got.publishes {
		pubs = append(pubs, Publish{Topic: p.Topic, Payload: &Value{tidy(decodePayload(p.Payload))}, QoS: &p.QoS, Retain: &p.Retain})
	}
	for _, m := range got.emits {
		emits = append(emits, Emit{Stream: m.Stream, Data: &Value{tidy(decodePayload(m.Data))}})
	}
	for _, w := range got.writes {
		writes = append(writes, PinWrite{Pin: w.Pin, Level: w.Level})
	}
	keys := make([]string, 0, len(kv.values))
	for k := range kv.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v, ok := kv.get(k); ok {
			if e.KV == nil {
				e.KV = map[string]any{}
			}
			e.KV[k] = tidy(decodePayload(v))
		}
	}
	if err != nil {
		e.Error = &ExpectError{}
		for name, kind := range errorKinds {
			if errors.Is(err, kind) {
				e.Error.Kind = name
			}
		}
		var ie *luafn.InvokeError
		if errors.As(err, &ie) {
			e.Error.Line = ie.Line
		}
		return e
	}
	e.Result = &Value{}
	if got.result != nil {
		e.Result.V = tidy(decodePayload(got.result))
	}
	return e
}
