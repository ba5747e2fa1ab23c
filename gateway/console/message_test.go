package console

import (
	"encoding/json"
	"math"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var fixedNow = func() time.Time { return time.UnixMilli(1732400000000) }

func TestEncode(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  Message
		want string
	}{
		{"json payload", Event{TS: 5, ID: "e1", Source: "mqtt", Topic: "a/b", Payload: []byte(`{"t":21.5}`), QoS: 1},
			`{"type":"event","ts":5,"id":"e1","source":"mqtt","topic":"a/b","payload":{"t":21.5},"qos":1,"size":10}`},
		{"text payload, ts from clock", Event{ID: "e2", Payload: []byte("on")},
			`{"type":"event","ts":1732400000000,"id":"e2","source":"","topic":"","payload":"on","qos":0,"size":2}`},
		{"cut payload", Event{TS: 1, Payload: []byte(`"` + strings.Repeat("é", 10) + `"`)},
			`{"type":"event","ts":1,"id":"","source":"","topic":"","payload":"\"éééé","truncated":true,"qos":0,"size":22}`},
		{"gpio edge", Event{TS: 1, ID: "e3", Source: "gpio", Topic: "gpio/GPIO17", Pin: "GPIO17", Level: 0, Edge: "falling"},
			`{"type":"event","ts":1,"id":"e3","source":"gpio","topic":"gpio/GPIO17","payload":"","qos":0,"size":0,"pin":"GPIO17","level":0,"edge":"falling"}`},
		{"invocation", Invocation{TS: 1, Function: "f", Version: 2, EventID: "e1", DurationUS: 80, Result: json.RawMessage(`[1,2]`)},
			`{"type":"invocation","ts":1,"function":"f","version":2,"event_id":"e1","duration_us":80,"result":[1,2],"error":""}`},
		{"invocation without result", Invocation{TS: 1, Function: "f", Error: "boom"},
			`{"type":"invocation","ts":1,"function":"f","version":0,"event_id":"","duration_us":0,"result":null,"error":"boom"}`},
		{"log", Log{TS: 1, Function: "f", Level: "warn", Msg: "hot"},
			`{"type":"log","ts":1,"function":"f","level":"warn","msg":"hot"}`},
		{"log with its origin", Log{TS: 1, Function: "f", Version: 3, Level: "info", Msg: "a\tb", EventID: "e1", File: "f.lua", Line: 4},
			`{"type":"log","ts":1,"function":"f","version":3,"level":"info","msg":"a\tb","event_id":"e1","file":"f.lua","line":4}`},
		{"drop report", Log{TS: 1, Function: "f", Version: 3, Level: "warn", Msg: "7 log lines dropped", Dropped: 7},
			`{"type":"log","ts":1,"function":"f","version":3,"level":"warn","msg":"7 log lines dropped","dropped":7}`},
		{"sync", Sync{TS: 1, Sink: "cloud", State: "backoff", Error: "503", LagMS: 7, Pending: 3},
			`{"type":"sync","ts":1,"sink":"cloud","state":"backoff","error":"503","lag_ms":7,"pending":3}`},
		{"sensor with a broken value", Sensor{TS: 1, Sensor: "k", Values: map[string]float64{"t": 21, "h": math.NaN()}},
			`{"type":"sensor","ts":1,"sensor":"k","values":{"h":null,"t":21}}`},
		{"firmware", Firmware{TS: 1, Device: "esp", Version: "1.2.0", Status: "applied"},
			`{"type":"firmware","ts":1,"device":"esp","version":"1.2.0","status":"applied","error":""}`},
	} {
		b, err := encode(tc.msg, 10, fixedNow)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if string(b) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, b, tc.want)
		}
	}
}

func TestParseFilter(t *testing.T) {
	f, err := parseFilter(url.Values{"types": {"event, log", "skipped"}, "function": {"f"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !f.accepts(TypeLog, "f", "", nil) || f.accepts(TypeLog, "g", "", nil) ||
		f.accepts(TypeInvocation, "f", "", nil) || f.accepts(TypeEvent, "", "a", nil) {
		t.Errorf("filter %+v accepts the wrong messages", f)
	}
	if _, err := parseFilter(url.Values{"types": {"event,nope"}}, true); err == nil {
		t.Error("unknown type accepted")
	}
	if _, err := parseFilter(url.Values{"topic": {"a/#"}}, false); err == nil {
		t.Error("topic filter accepted without a matcher")
	}
}

// FuzzEncodeEvent: whatever bytes a device publishes, the live stream carries valid JSON
// within the payload limit.
func FuzzEncodeEvent(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `[1,2`, "\xff\xfe", "é", `"x"`, "", strings.Repeat("ü", 40)} {
		f.Add([]byte(s), "sensors/x")
	}
	f.Fuzz(func(t *testing.T, payload []byte, topic string) {
		b, err := encode(Event{Topic: topic, Payload: payload}, 64, fixedNow)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Payload   json.RawMessage
			Truncated bool
			Size      int
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("invalid JSON %q: %v", b, err)
		}
		if m.Size != len(payload) || m.Truncated != (len(payload) > 64) {
			t.Fatalf("size %d truncated %v for %d bytes", m.Size, m.Truncated, len(payload))
		}
		if m.Truncated {
			var s string
			if err := json.Unmarshal(m.Payload, &s); err != nil || len(s) > 64 || !utf8.ValidString(s) {
				t.Fatalf("cut payload %q", m.Payload)
			}
		}
	})
}

// FuzzParseFilter: the query string comes from any client; parsing never panics and a
// parsed filter always makes a decision.
func FuzzParseFilter(f *testing.F) {
	f.Add("types=event,log&function=f&topic=a/%2B")
	f.Add("types=,,&topic=")
	f.Add("types=bogus")
	f.Fuzz(func(t *testing.T, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		flt, err := parseFilter(q, true)
		if err != nil {
			return
		}
		flt.accepts(TypeEvent, "f", "a/b", func(string, string) bool { return true })
	})
}
