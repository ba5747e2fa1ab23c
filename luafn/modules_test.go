package luafn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
)

func TestKVOverlay(t *testing.T) {
	kv := newMemKV()
	kv.set("fn", "n", "10")
	kv.set("fn", "obj", `{"a":[1,2]}`)
	kv.set("fn", "gone", `"x"`)
	kv.set("other", "n", "99") // another function's namespace
	f := newFn(t, `function handle(e)
		local r = {}
		r.committed = kv.get("n")
		r.obj = kv.get("obj")
		r.incr = kv.incr("n", 5)
		r.after_incr = kv.get("n")
		r.incr_new = kv.incr("fresh")
		kv.set("s", {x = 1}, 60)
		r.set = kv.get("s")
		kv.del("gone")
		r.deleted = kv.get("gone")
		r.incr_set = kv.incr("s2", 2)
		kv.set("s2", 7)
		r.incr_after_set = kv.incr("s2", 1)
		kv.del("d")
		r.incr_after_del = kv.incr("d", 3)
		kv.set("nil", nil)
		r.keys = kv.keys("")
		r.missing = kv.get("missing")
		return r
	end`, Limits{}, Host{KV: kv})
	res := call(t, f, nil)
	want := map[string]any{
		"committed": int64(10), "obj": map[string]any{"a": []any{int64(1), int64(2)}},
		"incr": int64(15), "after_incr": int64(15), "incr_new": int64(1),
		"set":      map[string]any{"x": int64(1)},
		"incr_set": int64(2), "incr_after_set": int64(8), "incr_after_del": int64(3),
		"keys": []any{"d", "fresh", "n", "obj", "s", "s2"},
	}
	if !reflect.DeepEqual(res.value(), want) {
		t.Fatalf("got  %#v\nwant %#v", res.value(), want)
	}
	wantOps := []KVOp{
		{Op: KVIncr, Key: "n", Delta: 5},
		{Op: KVIncr, Key: "fresh", Delta: 1},
		{Op: KVSet, Key: "s", Value: []byte(`{"x":1}`), TTL: time.Minute},
		{Op: KVDel, Key: "gone"},
		{Op: KVIncr, Key: "s2", Delta: 2},
		{Op: KVSet, Key: "s2", Value: []byte(`7`)},
		{Op: KVIncr, Key: "s2", Delta: 1},
		{Op: KVDel, Key: "d"},
		{Op: KVIncr, Key: "d", Delta: 3},
		{Op: KVDel, Key: "nil"},
	}
	if !reflect.DeepEqual(res.Effects.KV, wantOps) {
		t.Fatalf("ops\n got  %+v\n want %+v", res.Effects.KV, wantOps)
	}
	// Committed as the store would, the next invocation sees what this one saw.
	kv.apply(t, "fn", res.Effects.KV)
	g := newFn(t, `function handle() return {n = kv.get("n"), s2 = kv.get("s2"), d = kv.get("d"), gone = kv.get("gone")} end`, Limits{}, Host{KV: kv})
	if got, want := call(t, g, nil).value(), map[string]any{"n": int64(15), "s2": int64(8), "d": int64(3)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after commit %v, want %v", got, want)
	}
}

func TestKVKeysCapAndOverlay(t *testing.T) {
	kv := newMemKV()
	for i := 0; i < 1500; i++ {
		kv.set("fn", "k"+strings.Repeat("0", 4-len(itoa(i)))+itoa(i), "1")
	}
	f := newFn(t, `function handle()
		kv.del("k0000")
		kv.set("k0000x", 1)
		local keys = kv.keys("k")
		return {n = #keys, first = keys[1], second = keys[2], last = keys[#keys], none = #kv.keys("zzz")}
	end`, Limits{}, Host{KV: kv})
	want := map[string]any{"n": int64(1000), "first": "k0000x", "second": "k0001", "last": "k0999", "none": int64(0)}
	if got := call(t, f, nil).value(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func TestKVErrors(t *testing.T) {
	kv := newMemKV()
	kv.set("fn", "str", `"text"`)
	kv.set("fn", "bad", `{not json`)
	for _, c := range []struct {
		src, msg string
		host     Host
	}{
		{`kv.incr("str")`, "not a number", Host{KV: kv}},
		{`kv.incr("n", 0/0)`, "finite", Host{KV: kv}},
		{`kv.get("bad")`, "stored value", Host{KV: kv}},
		{`kv.get("")`, "key must be", Host{KV: kv}},
		{`kv.get(string.rep("k", 257))`, "key must be 1 to 256 bytes", Host{KV: kv, Store: testStore}},
		{`kv.set("k", print)`, "cannot convert a function", Host{KV: kv}},
		{`kv.set("k", 1, -5)`, "ttl", Host{KV: kv}},
		{`kv.set("k", string.rep("x", 1100000))`, "more than", Host{KV: kv, Store: testStore}},
		{`cloud.emit("s", string.rep("x", 1100000))`, "more than", Host{KV: kv, Store: testStore}},
		{`cloud.emit(string.rep("s", 65), 1)`, "stream name must be 1 to 64 bytes", Host{KV: kv, Store: testStore}},
		{`kv.set("k", "\255\254")`, "not valid UTF-8", Host{KV: kv}}, // refused, not mangled to U+FFFD
		{`kv.set("k", {["\255"] = 1})`, "not valid UTF-8", Host{KV: kv}},
		{`cloud.emit("s", {blob = "\200"})`, "not valid UTF-8", Host{KV: kv}},
		{`kv.get("a")`, "no KV store", Host{}},
		{`kv.keys("a")`, "no KV store", Host{}},
		{`kv.get("a")`, "disk on fire", Host{KV: &memKV{err: errors.New("disk on fire")}}},
	} {
		f := newFn(t, "function handle() "+c.src+" end", Limits{}, c.host)
		if ie := callErr(t, f, nil, ErrRuntime); !strings.Contains(ie.Message, c.msg) {
			t.Errorf("%s: %q does not say %q", c.src, ie.Message, c.msg)
		}
	}
	// Writes need no store: they are only recorded.
	f := newFn(t, `function handle() kv.set("a", 1) kv.del("b") end`, Limits{}, Host{})
	if n := len(call(t, f, nil).Effects.KV); n != 2 {
		t.Fatalf("%d ops", n)
	}
}

func TestPublishToSysRefused(t *testing.T) {
	f := newFn(t, `function handle() mqtt.publish("$SYS/broker/clients", "0") end`, Limits{}, Host{})
	if ie := callErr(t, f, nil, ErrRuntime); !strings.Contains(ie.Message, "the broker's own") {
		t.Fatalf("%v", ie)
	}
}

func TestMQTTPublish(t *testing.T) {
	f := newFn(t, `function handle()
		mqtt.publish("a/b", "text")
		mqtt.publish("a/c", {v = 1.5, list = {1, 2}}, {qos = 1, retain = true})
		mqtt.publish("a/d", 42)
		mqtt.publish("a/e")
	end`, Limits{}, Host{})
	want := []Publish{
		{Topic: "a/b", Payload: []byte("text")},
		{Topic: "a/c", Payload: []byte(`{"list":[1,2],"v":1.5}`), QoS: 1, Retain: true},
		{Topic: "a/d", Payload: []byte("42")},
		{Topic: "a/e"},
	}
	if got := call(t, f, nil).Effects.Publishes; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	for _, bad := range []string{`mqtt.publish("a/+", "x")`, `mqtt.publish("a/#", "x")`, `mqtt.publish("", "x")`,
		`mqtt.publish("a", "x", {qos = 2})`, `mqtt.publish("a", "x", 5)`, `mqtt.publish("\255", "x")`} {
		f := newFn(t, "function handle() "+bad+" end", Limits{}, Host{})
		callErr(t, f, nil, ErrRuntime)
	}
}

func TestCloudEmit(t *testing.T) {
	f := newFn(t, `function handle() cloud.emit("alerts", {t = 31, at = "kitchen"}) cloud.emit("raw", "s") end`, Limits{}, Host{})
	want := []Emit{{Stream: "alerts", Data: []byte(`{"at":"kitchen","t":31}`)}, {Stream: "raw", Data: []byte(`"s"`)}}
	if got := call(t, f, nil).Effects.Emits; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	for _, bad := range []string{`cloud.emit("$dead", 1)`, `cloud.emit("", 1)`, `cloud.emit("a b", 1)`, `cloud.emit("*", 1)`, `cloud.emit("s")`} {
		f := newFn(t, "function handle() "+bad+" end", Limits{}, Host{})
		callErr(t, f, nil, ErrRuntime)
	}
}

type levelPins map[string]int

func (p levelPins) ReadPin(pin string) (int, error) {
	l, ok := p[pin]
	if !ok {
		return 0, errors.New("no such pin")
	}
	return l, nil
}

func TestGPIO(t *testing.T) {
	host := Host{Pins: levelPins{"GPIO4": 1, "GPIO5": 0}, WritablePins: []string{"GPIO17", "GPIO18"}}
	f := newFn(t, `function handle()
		gpio.write("GPIO17", 1)
		gpio.write("GPIO18", false)
		gpio.write("GPIO17", true)
		return {gpio.read("GPIO4"), gpio.read("GPIO5")}
	end`, Limits{}, host)
	res := call(t, f, nil)
	if want := []any{int64(1), int64(0)}; !reflect.DeepEqual(res.value(), want) {
		t.Fatalf("reads %v", res.value())
	}
	if want := []PinWrite{{"GPIO17", 1}, {"GPIO18", 0}, {"GPIO17", 1}}; !reflect.DeepEqual(res.Effects.PinWrites, want) {
		t.Fatalf("writes %+v", res.Effects.PinWrites)
	}
	for _, c := range []struct{ src, msg string }{
		{`gpio.write("GPIO4", 1)`, "not writable"},
		{`gpio.write("GPIO17", 2)`, "level must be"},
		{`gpio.read("GPIO99")`, "no such pin"},
	} {
		f := newFn(t, "function handle() "+c.src+" end", Limits{}, host)
		if ie := callErr(t, f, nil, ErrRuntime); !strings.Contains(ie.Message, c.msg) {
			t.Errorf("%s: %v", c.src, ie)
		}
	}
	f = newFn(t, `function handle() gpio.write("GPIO17", 1) end`, Limits{}, Host{})
	callErr(t, f, nil, ErrRuntime) // no writable pins by default
}

// recordHandler keeps what a logger was given.
type recordHandler struct{ msgs []string }

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestLogs(t *testing.T) {
	rec := &recordHandler{}
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	host := Host{Logger: slog.New(rec), Now: func() time.Time { return clock }}
	f := newFn(t, `log.info("loading")
	function handle()
		log.debug("d", 1, nil, true)
		log.info("i", 2.5)
		log.warn("w", setmetatable({}, {__tostring = function() return "custom" end}))
		log.error("e")
		print("p", "q")
		log.info(string.rep("x", 5000))
		for i = 1, 200 do log.info(i) end
		return time.now()
	end`, Limits{}, host)
	res := call(t, f, nil)
	if res.value() != clock.UnixMilli() {
		t.Errorf("time.now() = %v", res.value())
	}
	// Arguments are joined as print joins them: tostring of each, tab-separated.
	want := []LogEntry{
		{slog.LevelDebug, "d\t1\tnil\ttrue", clock, "fn.lua", 3},
		{slog.LevelInfo, "i\t2.5", clock, "fn.lua", 4},
		{slog.LevelWarn, "w\tcustom", clock, "fn.lua", 5},
		{slog.LevelError, "e", clock, "fn.lua", 6},
		{slog.LevelInfo, "p\tq", clock, "fn.lua", 7},
	}
	if !reflect.DeepEqual(res.Logs[:5], want) {
		t.Errorf("logs %+v", res.Logs[:5])
	}
	if m := res.Logs[5].Message; len(m) != DefaultLogLineBytes+3 || !strings.HasSuffix(m, "...") {
		t.Errorf("long message not truncated: %d bytes", len(m))
	}
	if n := len(res.Logs); n != DefaultLogLines+1 || res.Logs[n-1].Message != "106 more log lines dropped: over 100 in one invocation" {
		t.Errorf("%d logs, last %q", n, res.Logs[n-1].Message)
	}
	if rec.msgs[0] != "loading" || len(rec.msgs) != 1+6+200 {
		t.Errorf("logger got %d messages, first %q", len(rec.msgs), rec.msgs[0])
	}
}

// liveLogs collects what Host.OnLog is given.
type liveLogs struct {
	mu   sync.Mutex
	recs []LogRecord
}

func (l *liveLogs) add(r LogRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r)
}

func (l *liveLogs) all() []LogRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.recs)
}

// withVMs runs fn on each of f's idle VMs, e.g. to install a test builtin.
func (f *Function) withVMs(fn func(*vm)) {
	vms := make([]*vm, 0, cap(f.pool))
	for range cap(f.pool) {
		v := <-f.pool
		fn(v)
		vms = append(vms, v)
	}
	for _, v := range vms {
		f.pool <- v
	}
}

// Every line reaches Host.OnLog as it is made, with the function, version, event and
// position: the first line is delivered before handle goes on to the next statement.
func TestLogsReportedLive(t *testing.T) {
	live := &liveLogs{}
	var seenDuring int
	host := Host{OnLog: live.add}
	f := newFn(t, `function handle(event)
  log.warn("hot:", 31.5)
  probe()
  return 1
end`, Limits{}, host)
	// probe is a Go builtin the test installs: it sees what was reported so far.
	f.withVMs(func(v *vm) {
		v.L.SetGlobal("probe", v.L.NewFunction(func(*lua.LState) int { seenDuring = len(live.all()); return 0 }))
	})
	call(t, f, &Event{ID: "ev-7", Source: "console"})
	got := live.all()
	want := []LogRecord{{Function: "fn", Version: 1, EventID: "ev-7",
		LogEntry: LogEntry{Level: slog.LevelWarn, Message: "hot:\t31.5", Time: got[0].Time, File: "fn.lua", Line: 2}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("live logs\n got %+v\nwant %+v", got, want)
	}
	if seenDuring != 1 {
		t.Errorf("%d lines reported while handle ran, want 1", seenDuring)
	}
}

// Lines over Limits.LogLines or Limits.LogRate are dropped from the live stream and
// reported, at most once a second, as one record saying how many.
func TestLogRateAndDropReports(t *testing.T) {
	live := &liveLogs{}
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := newFn(t, `function handle(event)
  for i = 1, event.payload.n do log.info("line", i) end
end`, Limits{LogLines: 10, LogRate: 15}, Host{OnLog: live.add, Now: func() time.Time { return clock }})
	// The late report's timer is the test's to fire.
	var late func()
	f.logs.after = func(d time.Duration, fn func()) func() bool {
		if d <= 0 || d > time.Second {
			t.Errorf("a late report waits %v", d)
		}
		late = fn
		return func() bool { late = nil; return true }
	}
	invoke := func(id string, n int) {
		t.Helper()
		call(t, f, &Event{ID: id, Source: "console", Payload: fmt.Appendf(nil, `{"n": %d}`, n)})
	}
	count := func() (lines, reports, dropped int, last LogRecord) {
		for _, r := range live.all() {
			if r.Dropped > 0 {
				reports++
				dropped += r.Dropped
				last = r
			} else {
				lines++
			}
		}
		return
	}

	// 25 lines in one invocation: 10 kept and reported, 15 dropped, reported at its end.
	invoke("a", 25)
	lines, reports, dropped, last := count()
	if lines != 10 || reports != 1 || dropped != 15 {
		t.Fatalf("after 25 lines: %d lines, %d reports of %d dropped", lines, reports, dropped)
	}
	if last.EventID != "a" || last.Level != slog.LevelWarn || last.Message != "15 log lines dropped (over 10 per invocation or 15 a second)" {
		t.Errorf("drop report %+v", last)
	}

	// In the same second: 5 more lines fit the rate, 3 do not; the report waits for its
	// second (a timer), so two invocations' drops arrive as one report.
	invoke("b", 8)
	invoke("c", 1)
	if lines, reports, _, _ := count(); lines != 15 || reports != 1 {
		t.Fatalf("within the second: %d lines, %d reports", lines, reports)
	}
	if late == nil {
		t.Fatal("no timer for the late report")
	}
	clock = clock.Add(time.Second)
	late()
	lines, reports, dropped, last = count()
	if reports != 2 || dropped != 15+4 || last.EventID != "" || last.Message != "4 log lines dropped (over 10 per invocation or 15 a second)" {
		t.Fatalf("late report: %d reports, %d dropped, last %+v", reports, dropped, last)
	}

	// A new second: the budget is back. Close sends what is still pending.
	invoke("d", 12)
	lines2, _, _, _ := count()
	if lines2-lines != 10 {
		t.Errorf("next second: %d lines reported, want 10", lines2-lines)
	}
	if late == nil {
		t.Fatal("no timer for d's report, which came less than a second after the last")
	}
	f.Close()
	if late != nil {
		t.Error("Close left the late report's timer running")
	}
	if _, reports, dropped, last := count(); reports != 3 || dropped != 15+4+2 || last.EventID != "d" {
		t.Errorf("after Close: %d reports, %d dropped, last %+v", reports, dropped, last)
	}
}

func TestEnvGatewayJSON(t *testing.T) {
	p, err := Compile(Spec{Name: "fn", Source: `function handle()
		local ok = pcall(function() env.NEW = "x" end)
		return {
			threshold = tonumber(env.THRESHOLD), missing = env.MISSING, id = gateway.id, env_write = ok,
			enc = json.encode({b = {1, 2, {c = "d"}}, a = "x\n\"y\"", e = {}, f = 1e21, g = 0.5}),
			dec = json.decode('{"a": [1, 2.5, "three", null, true], "b": {"c": "\\u00e9\\ud83d\\ude00"}}'),
		}
	end`, Env: map[string]string{"THRESHOLD": "30"}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(p, Host{GatewayID: "pi-kitchen"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]any{
		"threshold": int64(30), "id": "pi-kitchen", "env_write": false,
		"enc": `{"a":"x\n\"y\"","b":[1,2,{"c":"d"}],"e":{},"f":1e+21,"g":0.5}`,
		"dec": map[string]any{"a": map[string]any{"1": int64(1), "2": 2.5, "3": "three", "5": true}, "b": map[string]any{"c": "é😀"}},
	}
	if got := call(t, f, nil).value(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
	g := newFn(t, `function handle() return json.decode("[1,") end`, Limits{}, Host{})
	if ie := callErr(t, g, nil, ErrRuntime); !strings.Contains(ie.Message, "json.decode") {
		t.Errorf("%v", ie)
	}
}
