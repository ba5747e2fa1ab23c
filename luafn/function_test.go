package luafn

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name, src string
		line      int
		msg       string
	}{
		{"syntax", "function handle(e)\n  return 1 +\nend", 3, "near 'end'"},
		{"unclosed", "function handle(e)\n  if x then\n", 3, "at end of file"},
		{"bytecode", "\x1bLuaQ\x00", 0, "bytecode"},
		{"nesting", "return " + strings.Repeat("{", 1200) + strings.Repeat("}", 1200), 1, "nesting deeper"},
		{"sum chain", "return 1" + strings.Repeat("+1", 1100), 1, "nesting deeper"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile(Spec{Name: "f", Filename: "f.lua", Source: c.src})
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("want *CompileError, got %v", err)
			}
			if ce.Line != c.line || !strings.Contains(ce.Message, c.msg) || ce.File != "f.lua" || ce.Function != "f" {
				t.Fatalf("got %+v, want line %d and %q", ce, c.line, c.msg)
			}
		})
	}
	// A long but legit elseif chain compiles.
	var b strings.Builder
	b.WriteString("function handle(e)\n if e == 0 then return 0\n")
	for i := 1; i < 300; i++ {
		b.WriteString(" elseif e == " + strings.Repeat("1", 1) + " then return 1\n")
	}
	b.WriteString(" end\nend")
	if _, err := Compile(Spec{Name: "f", Source: b.String()}); err != nil {
		t.Fatalf("elseif chain: %v", err)
	}
}

func TestCompileRejectsBadSettings(t *testing.T) {
	for _, lim := range []Limits{{Timeout: -1}, {Memory: 1000}, {Concurrency: -2}, {CallDepth: 5}, {Registry: 10}, {PatternSteps: 5}} {
		if _, err := Compile(Spec{Name: "f", Source: "function handle() end", Limits: lim}); err == nil {
			t.Errorf("%+v: accepted", lim)
		}
	}
	if _, err := Compile(Spec{Source: "function handle() end"}); err == nil {
		t.Error("nameless function accepted")
	}
	p, err := Compile(Spec{Name: "f", Source: "function handle() end"})
	if err != nil {
		t.Fatal(err)
	}
	if l := p.Spec().Limits; l.Timeout != DefaultTimeout || l.Memory != DefaultMemory || l.Concurrency != 1 || p.Spec().Filename != "f.lua" {
		t.Fatalf("defaults not filled: %+v", p.Spec())
	}
}

func TestNewRefusesBrokenTopLevel(t *testing.T) {
	for _, c := range []struct{ src, msg string }{
		{"local x = nil\nx.y = 1\nfunction handle() end", "attempt to index"},
		{"x = 1", "no global function handle"},
		{"handle = 42", "no global function handle"},
		{"while true do end", "timeout"},
		{"kv.set('a', 1) function handle() end", "only be called while handle runs"},
	} {
		p, err := Compile(Spec{Name: "f", Filename: "f.lua", Source: c.src, Limits: Limits{Timeout: 20 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(p, Host{})
		var ce *CompileError
		if !errors.As(err, &ce) || !strings.Contains(ce.Message, c.msg) {
			t.Errorf("%q: got %v, want a CompileError with %q", c.src, err, c.msg)
		}
	}
	p, _ := Compile(Spec{Name: "f", Filename: "f.lua", Source: "local x = nil\nx.y = 1\nfunction handle() end"})
	_, err := New(p, Host{})
	if ce := (*CompileError)(nil); !errors.As(err, &ce) || ce.Line != 2 {
		t.Errorf("top-level error: got %v, want line 2", err)
	}
}

func TestEventTable(t *testing.T) {
	f := newFn(t, `function handle(e)
		local out = {}
		for k, v in pairs(e) do out[k] = v end
		out.payload_type = type(e.payload)
		return out
	end`, Limits{}, Host{})
	for _, c := range []struct {
		name string
		ev   Event
		want map[string]any
	}{
		{"mqtt json", Event{ID: "01", Source: "mqtt", TS: 1732400000000, Topic: "s/a/temp", QoS: 1, Payload: []byte(` {"t": 21.5, "ok": true, "tags": ["a", "b"], "n": null}`)},
			map[string]any{"id": "01", "source": "mqtt", "ts": int64(1732400000000), "topic": "s/a/temp", "qos": int64(1),
				"payload":      map[string]any{"t": 21.5, "ok": true, "tags": []any{"a", "b"}},
				"raw":          ` {"t": 21.5, "ok": true, "tags": ["a", "b"], "n": null}`,
				"payload_type": "table"}},
		{"mqtt text", Event{ID: "02", Source: "mqtt", TS: 5, Topic: "t", Payload: []byte("21.5")},
			map[string]any{"id": "02", "source": "mqtt", "ts": int64(5), "topic": "t", "qos": int64(0), "payload": "21.5", "raw": "21.5", "payload_type": "string"}},
		{"mqtt bad json", Event{ID: "03", Source: "mqtt", TS: 5, Topic: "t", Payload: []byte("{nope")},
			map[string]any{"id": "03", "source": "mqtt", "ts": int64(5), "topic": "t", "qos": int64(0), "payload": "{nope", "raw": "{nope", "payload_type": "string"}},
		{"gpio", Event{ID: "04", Source: "gpio", TS: 7, Pin: "GPIO17", Level: 1, Edge: "falling", Coalesced: 2},
			map[string]any{"id": "04", "source": "gpio", "ts": int64(7), "pin": "GPIO17", "level": int64(1), "edge": "falling", "coalesced": int64(2), "payload_type": "nil"}},
		{"sensor", Event{ID: "05", Source: "sensor", TS: 8, Sensor: "kitchen", Values: map[string]float64{"temp": 21.25, "hum": 40}},
			map[string]any{"id": "05", "source": "sensor", "ts": int64(8), "sensor": "kitchen", "values": map[string]any{"temp": 21.25, "hum": int64(40)}, "payload_type": "nil"}},
		{"timer", Event{ID: "06", Source: "timer", TS: 9},
			map[string]any{"id": "06", "source": "timer", "ts": int64(9), "payload_type": "nil"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := call(t, f, &c.ev)
			if !reflect.DeepEqual(res.value(), c.want) {
				t.Fatalf("got  %#v\nwant %#v", res.value(), c.want)
			}
		})
	}
}

func TestInvokeErrorDetails(t *testing.T) {
	f := newFn(t, `
local function inner(x)
  return x.field.missing
end
function handle(e)
  if e.topic == "table" then error({code = 1}) end
  if e.topic == "tostring" then error(setmetatable({}, {__tostring = function() while true do end end})) end
  if e.topic == "level0" then error("plain", 0) end
  local r = inner({})
  return r
end`, Limits{Timeout: 50 * time.Millisecond}, Host{})
	ie := callErr(t, f, &Event{Topic: "x"}, ErrRuntime)
	if ie.Function != "fn" || ie.Version != 1 || ie.File != "fn.lua" || ie.Line != 3 || !strings.Contains(ie.Message, "attempt to index") {
		t.Errorf("got %+v", ie)
	}
	if !strings.HasPrefix(ie.Traceback, "fn.lua:3: in function 'inner'") || !strings.Contains(ie.Traceback, "\nfn.lua:9: in ") {
		t.Errorf("traceback %q", ie.Traceback)
	}
	if got := ie.Error(); got != "fn v1: fn.lua:3: "+ie.Message {
		t.Errorf("Error() = %q", got)
	}
	start := time.Now()
	for _, topic := range []string{"table", "tostring"} {
		ie = callErr(t, f, &Event{Topic: topic}, ErrRuntime)
		if ie.Message != "(error object is a table value)" || ie.Line != 6+len(topic)/8 {
			t.Errorf("%s: got %+v", topic, ie)
		}
	}
	if d := time.Since(start); d > 40*time.Millisecond {
		t.Errorf("error objects took %v: __tostring must not run", d)
	}
	ie = callErr(t, f, &Event{Topic: "level0"}, ErrRuntime)
	if ie.Message != "plain" || ie.Line != 8 {
		t.Errorf("level 0: got %+v", ie)
	}
}

func TestFailedInvocationHasNoEffects(t *testing.T) {
	kv := newMemKV()
	f := newFn(t, `function handle(e)
		kv.set("a", 1)
		cloud.emit("s", {x = 1})
		mqtt.publish("t", "p")
		log.info("before")
		error("boom")
	end`, Limits{}, Host{KV: kv})
	res, err := f.Invoke(context.Background(), &Event{})
	if !errors.Is(err, ErrRuntime) {
		t.Fatalf("err %v", err)
	}
	if res == nil || !res.Effects.Empty() || res.value() != nil {
		t.Fatalf("failed invocation returned %+v", res)
	}
	if len(res.Logs) != 1 || res.Logs[0].Message != "before" || res.Duration <= 0 {
		t.Fatalf("logs and duration must survive: %+v", res)
	}
}

func TestResultConversionErrors(t *testing.T) {
	for _, c := range []struct{ expr, msg string }{
		{"0/0", "NaN"},
		{"1/0", "inf"},
		{"-1/0", "-inf"},
		{"{x = 0/0}", "NaN"},
		{"print", "function"},
		{"{[true] = 1}", "boolean as an object key"},
	} {
		f := newFn(t, "function handle() return "+c.expr+" end", Limits{}, Host{})
		ie := callErr(t, f, nil, ErrResult)
		if !strings.Contains(ie.Message, c.msg) {
			t.Errorf("%s: %q does not name %q", c.expr, ie.Message, c.msg)
		}
	}
	f := newFn(t, "function handle() local t = {} t.self = t return t end", Limits{}, Host{})
	if ie := callErr(t, f, nil, ErrResult); !strings.Contains(ie.Message, "cycle") {
		t.Errorf("cycle: %v", ie)
	}
}

func TestGlobalsPersistUntilABoundTrips(t *testing.T) {
	f := newFn(t, `count = 0
	function handle(e)
		count = count + 1
		if e.topic == "loop" then while true do end end
		return count
	end`, Limits{Timeout: 20 * time.Millisecond}, Host{})
	for want := int64(1); want <= 3; want++ {
		if got := call(t, f, nil).value(); got != want {
			t.Fatalf("invocation %d saw count %v", want, got)
		}
	}
	callErr(t, f, &Event{Topic: "loop"}, ErrTimeout)
	// The VM that timed out was replaced: a fresh state, fresh globals.
	if got := call(t, f, nil).value(); got != int64(1) {
		t.Fatalf("after a timeout count = %v, want 1 (fresh VM)", got)
	}
}

// gatePins is a fake GPIO whose reads block until released: it lets a test hold an
// invocation in flight.
type gatePins struct {
	entered chan string
	release chan struct{}
}

func (g *gatePins) ReadPin(pin string) (int, error) {
	g.entered <- pin
	<-g.release
	return 1, nil
}

func TestConcurrencyAndClose(t *testing.T) {
	pins := &gatePins{entered: make(chan string, 4), release: make(chan struct{})}
	f := newFn(t, `function handle(e)
		if e.pin ~= "" and e.pin ~= nil then return gpio.read(e.pin) end
		return "fast"
	end`, Limits{Concurrency: 2, Timeout: 5 * time.Second}, Host{Pins: pins})

	// One slow invocation holds a VM; the other VM keeps serving.
	slow := make(chan error, 1)
	go func() {
		_, err := f.Invoke(context.Background(), &Event{Pin: "P1"})
		slow <- err
	}()
	<-pins.entered
	if got := call(t, f, nil).value(); got != "fast" {
		t.Fatalf("got %v", got)
	}

	// Close waits for the invocation in flight.
	closed := make(chan struct{})
	go func() { f.Close(); close(closed) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case <-closed:
		t.Fatal("Close returned with an invocation in flight")
	default:
	}
	if _, err := f.Invoke(context.Background(), &Event{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Invoke during Close: %v", err)
	}
	close(pins.release)
	if err := <-slow; err != nil {
		t.Fatalf("in-flight invocation: %v", err)
	}
	<-closed
	if _, err := f.Invoke(context.Background(), &Event{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Invoke after Close: %v", err)
	}
	f.Close() // twice is fine
}

func TestInvokeWaitHonoursContext(t *testing.T) {
	pins := &gatePins{entered: make(chan string, 1), release: make(chan struct{})}
	f := newFn(t, `function handle(e) return gpio.read("P") end`, Limits{Timeout: 5 * time.Second}, Host{Pins: pins})
	go f.Invoke(context.Background(), &Event{})
	<-pins.entered
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := f.Invoke(ctx, &Event{}); !errors.Is(err, ErrCanceled) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	close(pins.release)
}

// TestRedeploySwap is the gateway's redeploy pattern: an atomic pointer to the current
// version, Close on the old one. Every event runs exactly once, on some version.
func TestRedeploySwap(t *testing.T) {
	deploy := func(version int) *Function {
		p, err := Compile(Spec{Name: "f", Version: version, Source: "function handle(e) return " + string(rune('0'+version)) + " end", Limits: Limits{Concurrency: 2}})
		if err != nil {
			t.Fatal(err)
		}
		f, err := New(p, Host{})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	var cur atomic.Pointer[Function]
	cur.Store(deploy(1))
	var ran [10]atomic.Int64
	var wg sync.WaitGroup
	const events = 2000
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < events/4; i++ {
				for {
					res, err := cur.Load().Invoke(context.Background(), &Event{})
					if errors.Is(err, ErrClosed) {
						continue // not run: retry on the current version
					}
					if err != nil {
						t.Error(err)
						return
					}
					ran[res.value().(int64)].Add(1)
					break
				}
			}
		}()
	}
	for v := 2; v <= 5; v++ {
		time.Sleep(2 * time.Millisecond)
		old := cur.Swap(deploy(v))
		old.Close()
	}
	wg.Wait()
	cur.Load().Close()
	total := int64(0)
	for i := range ran {
		total += ran[i].Load()
	}
	if total != events {
		t.Fatalf("%d events ran, want %d", total, events)
	}
}
