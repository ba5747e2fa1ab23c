package fntest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moongate/moongate/gateway"
	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/mqtt"
)

// Result is the outcome of one case.
type Result struct {
	File     string        `json:"file"`
	Case     string        `json:"case"`
	OK       bool          `json:"ok"`
	Diffs    []string      `json:"diffs,omitempty"` // what differs, by path: "publishes[0].payload.temp: want 31, got 30"
	Logs     []string      `json:"logs,omitempty"`  // the function's log lines, "level msg"
	Duration time.Duration `json:"duration_ns"`
}

// Runner runs test files.
type Runner struct {
	// Config, when set, is the gateway's config: a function there whose source is the
	// test's .lua runs with its entry's env and limits, and every test event must reach it
	// through its triggers.
	Config *config.Config
}

// Run runs every case of f.
func (r *Runner) Run(f *File) ([]Result, error) {
	entry, err := r.function(f)
	if err != nil {
		return nil, err
	}
	return r.run(f, entry), nil
}

// RunFunction runs every case of f against fn (its Code, env and limits) instead of the
// .lua file beside f: a gateway's check of a version before it goes live. The test's env
// and emit win, as in Run; triggers are not checked.
func (r *Runner) RunFunction(f *File, fn config.Function) []Result {
	return (&Runner{}).run(f, overrides(f, &fn))
}

func (r *Runner) run(f *File, entry *config.Function) []Result {
	var out []Result
	for _, c := range f.Cases {
		res := Result{File: f.path, Case: c.Name}
		start := time.Now()
		res.Diffs, res.Logs = r.runCase(f, entry, c)
		res.Duration = time.Since(start)
		res.OK = len(res.Diffs) == 0
		out = append(out, res)
	}
	return out
}

// function finds the config entry of f's function (or makes one with the defaults).
func (r *Runner) function(f *File) (*config.Function, error) {
	src, err := os.ReadFile(f.source())
	if err != nil {
		return nil, fmt.Errorf("%s: function: %w", f.path, err)
	}
	retries := config.DefaultFunctionRetries
	entry := &config.Function{Name: f.Name, Source: f.source(), Code: string(src), Timeout: config.DefaultFunctionTimeout,
		Memory: config.DefaultFunctionMemory, Concurrency: 1, Retries: &retries}
	if r.Config != nil {
		want, _ := filepath.Abs(f.source())
		found := false
		for _, cf := range r.Config.Functions {
			if p, _ := filepath.Abs(r.Config.Resolve(cf.Source)); p == want {
				cf := cf
				cf.Code = string(src)
				entry, found = &cf, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%s: no function of %s has source %s", f.path, r.Config.File, f.Function)
		}
	}
	return overrides(f, entry), nil
}

// overrides is entry with the test's env and emit: they are what the cases were written for.
func overrides(f *File, entry *config.Function) *config.Function {
	e := *entry
	if f.Env != nil {
		e.Env = f.Env
	}
	if f.Emit != "" {
		e.Emit = f.Emit
	}
	return &e
}

// runCase runs c's events on a fresh VM and KV, and compares what they did with c.Expect.
func (r *Runner) runCase(f *File, entry *config.Function, c Case) (diffs, logs []string) {
	got, kv, lastErr, diffs := r.observe(f, entry, c)
	if kv == nil { // the case did not get to its expectations
		return diffs, got.logs
	}
	return append(diffs, compare(c.Expect, got, kv, lastErr)...), got.logs
}

// observe runs c's events on a fresh VM and KV and returns what they did, the KV after
// them and the last event's error; diffs are the failures that are not expectations (a
// nil kv: the case stopped short).
func (r *Runner) observe(f *File, entry *config.Function, c Case) (got observed, kv *memKV, lastErr error, diffs []string) {
	clock := f.Clock
	kv = newMemKV(func() time.Time { return clock })
	for k, v := range f.KV {
		kv.put(k, v)
	}
	for k, v := range c.KV {
		kv.put(k, v)
	}
	host := luafn.Host{KV: kv, GatewayID: "test", Now: func() time.Time { return clock },
		Pins: pins(f.Inputs), WritablePins: r.outputs(f)}
	fn, err := gateway.Sandbox(*entry, host)
	if err != nil {
		return got, nil, nil, []string{"the function does not load: " + err.Error()}
	}
	defer fn.Close()

	for i, e := range c.Events {
		after := e.After
		if after == 0 {
			after = time.Second
		}
		if i > 0 {
			clock = clock.Add(after)
		}
		ev, err := e.event(i, clock)
		if err != nil {
			return got, nil, nil, []string{fmt.Sprintf("events[%d]: %v", i, err)}
		}
		if r.Config != nil {
			if msg := reaches(entry, e, ev); msg != "" {
				diffs = append(diffs, fmt.Sprintf("events[%d]: %s", i, msg))
				continue
			}
		}
		res, err := fn.Invoke(context.Background(), ev)
		if res != nil {
			for _, l := range res.Logs {
				got.logs = append(got.logs, fmt.Sprintf("%s %s", strings.ToLower(l.Level.String()), l.Message))
			}
		}
		lastErr = err
		if err != nil {
			if i < len(c.Events)-1 || c.Expect.Error == nil {
				diffs = append(diffs, fmt.Sprintf("events[%d]: unexpected error: %s", i, describeErr(err)))
			}
			continue
		}
		got.add(entry, res)
		if err := kv.apply(res.Effects.KV); err != nil {
			diffs = append(diffs, fmt.Sprintf("events[%d]: %v", i, err))
		}
	}
	return got, kv, lastErr, diffs
}

// pins reads the levels a test gives.
type pins map[string]int

func (p pins) ReadPin(pin string) (int, error) {
	l, ok := p[pin]
	if !ok {
		return 0, fmt.Errorf("pin %s: no level given in the test's inputs", pin)
	}
	return l, nil
}

// outputs are the pins gpio.write may drive: the test's, and the config's mode: out sensors.
func (r *Runner) outputs(f *File) []string {
	out := slices.Clone(f.Outputs)
	if r.Config == nil {
		return out
	}
	for name, n := range r.Config.Sensors {
		var s struct {
			Pin  string `yaml:"pin"`
			Mode string `yaml:"mode"`
		}
		if n.Decode(&s) == nil && s.Mode == "out" {
			out = append(out, name, s.Pin)
		}
	}
	return out
}

// event makes the luafn event of e, as the router would.
func (e Event) event(i int, now time.Time) (*luafn.Event, error) {
	ev := &luafn.Event{ID: fmt.Sprintf("test-%d", i+1), TS: now.UnixMilli()}
	switch {
	case e.MQTT != nil:
		p, err := e.MQTT.payload()
		if err != nil {
			return nil, err
		}
		ev.Source, ev.Topic, ev.Payload, ev.QoS = "mqtt", e.MQTT.Topic, p, e.MQTT.QoS
	case e.GPIO != nil:
		ev.Source, ev.Pin, ev.Level, ev.Edge = "gpio", e.GPIO.Pin, e.GPIO.Level, e.GPIO.Edge
	case e.Sensor != nil:
		ev.Source, ev.Sensor, ev.Values = "sensor", e.Sensor.Name, e.Sensor.Values
	default:
		ev.Source, ev.Topic = "timer", e.Timer
	}
	return ev, nil
}

// reaches says why no trigger of f takes e ("" if one does).
func reaches(f *config.Function, e Event, ev *luafn.Event) string {
	for _, t := range f.Parsed {
		switch {
		case e.MQTT != nil && t.Kind == config.TriggerMQTT && mqtt.Match(t.Filter, ev.Topic),
			e.GPIO != nil && t.Kind == config.TriggerGPIO && t.Watch.Pin == ev.Pin,
			e.Sensor != nil && t.Kind == config.TriggerSensor && t.Sensor == ev.Sensor,
			e.Timer != "" && t.Kind == config.TriggerEvery && t.Spec == e.Timer:
			return ""
		}
	}
	what := ""
	switch {
	case e.MQTT != nil:
		what = "mqtt " + ev.Topic
	case e.GPIO != nil:
		what = "gpio " + ev.Pin
	case e.Sensor != nil:
		what = "sensor " + ev.Sensor
	default:
		what = e.Timer
	}
	return fmt.Sprintf("no trigger of %s takes %s (triggers: %s)", f.Name, what, strings.Join(f.Triggers, ", "))
}

// observed is what a case's events did.
type observed struct {
	publishes []luafn.Publish
	writes    []luafn.PinWrite
	emits     []luafn.Emit
	result    json.RawMessage
	logs      []string
}

func (o *observed) add(f *config.Function, res *luafn.Result) {
	o.publishes = append(o.publishes, res.Effects.Publishes...)
	o.writes = append(o.writes, res.Effects.PinWrites...)
	o.emits = append(o.emits, res.Effects.Emits...)
	if f.Emit != "" && res.Value != nil { // emit: of the returned value, as the gateway commits it
		o.emits = append(o.emits, luafn.Emit{Stream: f.Emit, Data: res.Value})
	}
	o.result = res.Value
}

func compare(want Expect, got observed, kv *memKV, err error) []string {
	var d differ
	if want.Error != nil {
		d.errorKind(want.Error, err)
	}
	if want.Publishes != nil {
		if len(*want.Publishes) != len(got.publishes) {
			d.addf("publishes: want %d, got %d%s", len(*want.Publishes), len(got.publishes), listPublishes(got.publishes))
		} else {
			for i, w := range *want.Publishes {
				g := got.publishes[i]
				path := fmt.Sprintf("publishes[%d]", i)
				if w.Topic != g.Topic {
					d.addf("%s.topic: want %q, got %q", path, w.Topic, g.Topic)
				}
				if w.QoS != nil && *w.QoS != g.QoS {
					d.addf("%s.qos: want %d, got %d", path, *w.QoS, g.QoS)
				}
				if w.Retain != nil && *w.Retain != g.Retain {
					d.addf("%s.retain: want %v, got %v", path, *w.Retain, g.Retain)
				}
				if w.Payload != nil {
					d.match(path+".payload", w.Payload.V, decodePayload(g.Payload))
				}
			}
		}
	}
	if want.Emits != nil {
		if len(*want.Emits) != len(got.emits) {
			d.addf("emits: want %d, got %d", len(*want.Emits), len(got.emits))
		} else {
			for i, w := range *want.Emits {
				g := got.emits[i]
				path := fmt.Sprintf("emits[%d]", i)
				if w.Stream != g.Stream {
					d.addf("%s.stream: want %q, got %q", path, w.Stream, g.Stream)
				}
				if w.Data != nil {
					d.match(path+".data", w.Data.V, decodePayload(g.Data))
				}
			}
		}
	}
	if want.GPIOWrites != nil {
		var w, g []string
		for _, x := range *want.GPIOWrites {
			w = append(w, fmt.Sprintf("%s=%d", x.Pin, x.Level))
		}
		for _, x := range got.writes {
			g = append(g, fmt.Sprintf("%s=%d", x.Pin, x.Level))
		}
		if !slices.Equal(w, g) {
			d.addf("gpio_writes: want %v, got %v", w, g)
		}
	}
	keys := make([]string, 0, len(want.KV))
	for k := range want.KV {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w := want.KV[k]
		g, ok := kv.get(k)
		switch {
		case w == nil && ok:
			d.addf("kv[%q]: want absent, got %s", k, g)
		case w != nil && !ok:
			d.addf("kv[%q]: want %s, got absent", k, show(jsonable(w)))
		case w != nil:
			d.match(fmt.Sprintf("kv[%q]", k), w, decodePayload(g))
		}
	}
	if want.Result != nil && err == nil {
		if got.result == nil {
			if want.Result.V != nil {
				d.addf("result: want %s, got nil", show(jsonable(want.Result.V)))
			}
		} else {
			d.match("result", want.Result.V, decodePayload(got.result))
		}
	}
	at := 0
	for _, w := range want.Logs {
		i := slices.IndexFunc(got.logs[at:], func(l string) bool { return strings.Contains(l, w) })
		if i < 0 {
			d.addf("logs: no line with %q (in order) in %q", w, got.logs)
			break
		}
		at += i + 1
	}
	return d.diffs
}

func listPublishes(ps []luafn.Publish) string {
	if len(ps) == 0 {
		return ""
	}
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "\n    %s %s", p.Topic, p.Payload)
	}
	return b.String()
}

var errorKinds = map[string]error{
	"runtime": luafn.ErrRuntime, "timeout": luafn.ErrTimeout, "memory": luafn.ErrMemory,
	"depth": luafn.ErrDepth, "registry": luafn.ErrRegistry, "pattern": luafn.ErrPattern, "result": luafn.ErrResult,
}

func kindNames() string {
	var names []string
	for k := range errorKinds {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

type differ struct{ diffs []string }

func (d *differ) addf(format string, args ...any) {
	d.diffs = append(d.diffs, fmt.Sprintf(format, args...))
}

func (d *differ) errorKind(w *ExpectError, err error) {
	if err == nil {
		d.addf("error: want %s, got none", describeWant(w))
		return
	}
	if w.Kind != "" && !errors.Is(err, errorKinds[w.Kind]) {
		d.addf("error: want %s, got %s", describeWant(w), describeErr(err))
		return
	}
	var ie *luafn.InvokeError
	errors.As(err, &ie)
	if w.Line > 0 && (ie == nil || ie.Line != w.Line) {
		d.addf("error: want it at line %d, got %v", w.Line, err)
	}
	if w.Message != "" && !strings.Contains(err.Error(), w.Message) {
		d.addf("error: want a message with %q, got %v", w.Message, err)
	}
}

// describeErr is an invocation's error as the gateway logs it (function, version,
// file:line, message), with its kind and the Lua traceback.
func describeErr(err error) string {
	var ie *luafn.InvokeError
	if !errors.As(err, &ie) {
		return err.Error()
	}
	s := fmt.Sprintf("%v (%v)", err, ie.Kind)
	for _, l := range strings.Split(strings.TrimSpace(ie.Traceback), "\n") {
		if l != "" {
			s += "\n        " + l
		}
	}
	return s
}

func describeWant(w *ExpectError) string {
	s := "an error"
	if w.Kind != "" {
		s = "a " + w.Kind + " error"
	}
	if w.Line > 0 {
		s += " at line " + strconv.Itoa(w.Line)
	}
	return s
}

// match compares what the test wants (as YAML decoded it) with what the function did (as
// JSON decodes it): maps partially, the rest exactly, numbers as numbers.
func (d *differ) match(path string, want, got any) {
	want = jsonable(want)
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			d.addf("%s: want an object, got %s", path, show(got))
			return
		}
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			gv, ok := g[k]
			if !ok {
				d.addf("%s.%s: want %s, got absent", path, k, show(w[k]))
				continue
			}
			d.match(path+"."+k, w[k], gv)
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			d.addf("%s: want %s, got %s", path, show(w), show(got))
			return
		}
		for i := range w {
			d.match(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])
		}
	default:
		if wn, ok := number(w); ok {
			if gn, ok := number(got); !ok || gn != wn {
				d.addf("%s: want %s, got %s", path, show(w), show(got))
			}
			return
		}
		if fmt.Sprint(w) != fmt.Sprint(got) || (w == nil) != (got == nil) {
			d.addf("%s: want %s, got %s", path, show(w), show(got))
		}
	}
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// decodePayload is a payload or JSON value as the test compares it: its JSON value, or
// the text itself when it is not JSON.
func decodePayload(b []byte) any {
	var v any
	if json.Unmarshal(b, &v) == nil {
		return v
	}
	return string(b)
}
