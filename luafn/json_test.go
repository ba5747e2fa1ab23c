package luafn

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"
)

func TestLuaToGo(t *testing.T) {
	for _, c := range []struct {
		expr string
		want any
	}{
		{"nil", nil},
		{"true", true},
		{"42", int64(42)},
		{"-0", int64(0)},
		{"2^53", int64(1 << 53)},
		{"2^53 + 2", int64(1<<53 + 2)}, // an integral float beyond 2^53 is still written as an integer
		{"1e300", 1e300},
		{"0.1", 0.1},
		{"'text'", "text"},
		{"{}", map[string]any{}},
		{"{1, 2, 3}", []any{int64(1), int64(2), int64(3)}},
		{"{1, nil, 3}", map[string]any{"1": int64(1), "3": int64(3)}},
		{"{[1] = 'a', [2] = 'b'}", []any{"a", "b"}},
		{"{[2] = 'b'}", map[string]any{"2": "b"}},
		{"{[0] = 'z', 'a'}", map[string]any{"0": "z", "1": "a"}},
		{"{[1.5] = 'x'}", map[string]any{"1.5": "x"}},
		{"{a = 1, 'b'}", map[string]any{"a": int64(1), "1": "b"}},
		{"{a = {b = {c = {}}}}", map[string]any{"a": map[string]any{"b": map[string]any{"c": map[string]any{}}}}},
		{"setmetatable({x = 1}, {__index = {y = 2}})", map[string]any{"x": int64(1)}},
		{"(function() local t = {1, 2, 3} t[3] = nil return t end)()", []any{int64(1), int64(2)}},
		{"(function() local t = {a = 1} t.a = nil return t end)()", map[string]any{}},
		{"(function() local s = {} return {s, s} end)()", []any{map[string]any{}, map[string]any{}}}, // shared, not a cycle
	} {
		if got := eval(t, c.expr); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.expr, got, c.want)
		}
	}
}

func TestConversionDepth(t *testing.T) {
	f := newFn(t, `function handle(e)
		local t = {}
		for i = 1, tonumber(e.topic) do t = {t} end
		return t
	end`, Limits{}, Host{})
	call(t, f, &Event{Topic: "120"})
	if ie := callErr(t, f, &Event{Topic: "200"}, ErrResult); !strings.Contains(ie.Message, "deeper than") {
		t.Errorf("%v", ie)
	}
	g := newFn(t, `function handle(e) return json.decode(string.rep("[", 200) .. string.rep("]", 200)) end`, Limits{}, Host{})
	if ie := callErr(t, g, nil, ErrRuntime); !strings.Contains(ie.Message, "deeper than") {
		t.Errorf("%v", ie)
	}
}

func TestJSONEncode(t *testing.T) {
	for _, c := range []struct{ expr, want string }{
		{"nil", "null"},
		{"{1, 'a', true, false}", `[1,"a",true,false]`},
		{"{b = 1, a = 2, [3] = 'x', [1.5] = 'y'}", `{"a":2,"b":1,"1.5":"y","3":"x"}`},
		{"{}", `{}`},
		{"1e21", "1e+21"},
		{"1e20", "100000000000000000000"},
		{"-1.5e-7", "-1.5e-7"},
		{"2^53 + 2", "9007199254740994"},
		{"'\\0\\1\\31\\127'", `"\u0000\u0001\u001f` + "\x7f" + `"`},
		{"'tab\\tnl\\ncr\\rq\"bs\\\\'", `"tab\tnl\ncr\rq\"bs\\"`},
		{"'é'", `"é"`},
	} {
		f := newFn(t, "function handle() return json.encode("+c.expr+") end", Limits{}, Host{})
		if got := call(t, f, nil).value(); got != c.want {
			t.Errorf("json.encode(%s) = %s, want %s", c.expr, got, c.want)
		}
	}
	for _, c := range []struct{ expr, msg string }{
		{"0/0", "NaN"}, {"{x = 1/0}", "inf"}, {"{print}", "function"}, {"{[true] = 1}", "boolean"},
		{"(function() local t = {} t[1] = t return t end)()", "cycle"},
		{"'\\255ok\\200'", "not valid UTF-8"},
	} {
		f := newFn(t, "function handle() return json.encode("+c.expr+") end", Limits{}, Host{})
		if ie := callErr(t, f, nil, ErrRuntime); !strings.Contains(ie.Message, c.msg) {
			t.Errorf("json.encode(%s): %q", c.expr, ie.Message)
		}
	}
}

func TestJSONDecodeErrors(t *testing.T) {
	v := fuzzVM(t)
	for _, s := range []string{"", "[", "{", `{"a"}`, `{"a":}`, `{a:1}`, "[1,]", "01", "1.", ".5", "-", "1e", "tru", "nul",
		`"\x"`, `"\u12"`, "\"a\nb\"", `"unterminated`, "[1] x", "{} {}", `{"a":1,}`} {
		if _, err := v.decodeJSON(s); err == nil {
			t.Errorf("%q: accepted", s)
		}
	}
	for s, want := range map[string]lua.LValue{
		` 12.5e1 `:             lua.LNumber(125),
		`-0`:                   lua.LNumber(0),
		`"\ud83d\ude00"`:       lua.LString("😀"),
		`"\ud83d"`:             lua.LString("\ufffd"),
		`"\ud83d\u0041"`:       lua.LString("\ufffdA"),
		`"\u00e9\/\b\f\n\r\t"`: lua.LString("é/\b\f\n\r\t"),
		"\"\xff\"":             lua.LString("\xff"), // bytes kept as they are
		`1e400`:                lua.LNumber(math.Inf(1)),
		`9007199254740993`:     lua.LNumber(9007199254740992),
	} {
		got, err := v.decodeJSON(s)
		if err != nil || got != want {
			t.Errorf("%q: got %v, %v; want %v", s, got, err, want)
		}
	}
}

// FuzzJSONDecode checks the decoder against encoding/json: the same texts are valid,
// and they decode to the same values (once null becomes an absent key or a hole).
func FuzzJSONDecode(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `[1,2.5,"x",true,null]`, `{"t":{"u":[{}]}}`, `"\u00e9\ud83d\ude00"`, `-1.5e-3`,
		`[`, `{"a":}`, `"\ud800"`, ` 0 `, `{"a":1,"a":2}`, `[1e999]`, "\"\x01\""} {
		f.Add(s)
	}
	v := fuzzVM(f)
	f.Fuzz(func(t *testing.T, s string) {
		v.mem = 0 // every input starts with the whole budget
		got, err := v.decodeJSON(s)
		var ref any
		refErr := json.Unmarshal([]byte(s), &ref)
		if refErr != nil {
			// Numbers out of float64's range are a type error there, infinity here.
			var se *json.SyntaxError
			if err == nil && errors.As(refErr, &se) {
				t.Fatalf("%q: accepted, encoding/json says %v", s, refErr)
			}
			return
		}
		if err != nil {
			if strings.Contains(err.Error(), "deeper than") {
				return
			}
			t.Fatalf("%q: %v, encoding/json accepts it", s, err)
		}
		if !utf8.ValidString(s) {
			return // encoding/json replaces invalid UTF-8; Lua strings keep the bytes
		}
		b, cerr := v.encodeJSON(got)
		if cerr != nil {
			return
		}
		var goVal any
		if err := json.Unmarshal(b, &goVal); err != nil {
			t.Fatalf("%q: re-encoded as %q, which encoding/json refuses: %v", s, b, err)
		}
		if want := withoutNulls(ref); !reflect.DeepEqual(goVal, want) {
			t.Fatalf("%q: got %#v, want %#v", s, goVal, want)
		}
	})
}

// withoutNulls turns what encoding/json decodes into what the Lua decoder builds: null
// is nil, so object keys disappear, trailing array items go, and an array with a hole
// (or an empty one) is a table that converts back as an object.
func withoutNulls(x any) any {
	switch x := x.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, v := range x {
			if v != nil {
				out[k] = withoutNulls(v)
			}
		}
		return out
	case []any:
		for len(x) > 0 && x[len(x)-1] == nil {
			x = x[:len(x)-1]
		}
		holes := len(x) == 0
		for _, v := range x {
			holes = holes || v == nil
		}
		if !holes {
			out := make([]any, len(x))
			for i, v := range x {
				out[i] = withoutNulls(v)
			}
			return out
		}
		out := map[string]any{}
		for i, v := range x {
			if v != nil {
				b, _ := appendNumber(nil, float64(i+1))
				out[string(b)] = withoutNulls(v)
			}
		}
		return out
	}
	return x
}
