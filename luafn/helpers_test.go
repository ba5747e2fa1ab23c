package luafn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// memKV is a KVReader over a map: the committed state of one namespace per key prefix
// "ns\x00key". Tests commit effects into it with apply, as the store would.
type memKV struct {
	mu   sync.Mutex
	data map[string][]byte
	err  error // returned by every read when set
}

// testStore is a store's limits, as the gateway passes sync/store's.
var testStore = StoreLimits{KeyBytes: 256, StreamBytes: 64, ValueBytes: 1 << 20}

func newMemKV() *memKV { return &memKV{data: map[string][]byte{}} }

func (m *memKV) KVGet(ns, key string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, false, m.err
	}
	v, ok := m.data[ns+"\x00"+key]
	return v, ok, nil
}

func (m *memKV) KVKeys(ns, prefix string, limit int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	var out []string
	for k := range m.data {
		if rest, ok := strings.CutPrefix(k, ns+"\x00"); ok && strings.HasPrefix(rest, prefix) {
			out = append(out, rest)
		}
	}
	slices.Sort(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *memKV) set(ns, key, json string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data[ns+"\x00"+key] = []byte(json)
}

// apply commits KV effects the way the store does: in order, incr on numbers.
func (m *memKV) apply(t testing.TB, ns string, ops []KVOp) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, op := range ops {
		k := ns + "\x00" + op.Key
		switch op.Op {
		case KVSet:
			m.data[k] = op.Value
		case KVDel:
			delete(m.data, k)
		case KVIncr:
			cur := 0.0
			if v, ok := m.data[k]; ok {
				if _, err := fmt.Sscan(string(v), &cur); err != nil {
					t.Fatalf("incr %s: %v", op.Key, err)
				}
			}
			b, _ := appendNumber(nil, cur+op.Delta)
			m.data[k] = b
		}
	}
}

// newFn compiles and deploys src with limits, failing the test on error.
func newFn(t testing.TB, src string, lim Limits, host Host) *Function {
	t.Helper()
	p, err := Compile(Spec{Name: "fn", Version: 1, Filename: "fn.lua", Source: src, Limits: lim})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	f, err := New(p, host)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}

// call invokes f with ev and fails the test on error.
func call(t testing.TB, f *Function, ev *Event) *Result {
	t.Helper()
	if ev == nil {
		ev = &Event{ID: "e1", Source: "console"}
	}
	res, err := f.Invoke(context.Background(), ev)
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	return res
}

// callErr invokes f and returns its error, which must be an *InvokeError of kind.
func callErr(t testing.TB, f *Function, ev *Event, kind error) *InvokeError {
	t.Helper()
	if ev == nil {
		ev = &Event{ID: "e1", Source: "console"}
	}
	_, err := f.Invoke(context.Background(), ev)
	var ie *InvokeError
	if !errors.As(err, &ie) {
		t.Fatalf("want *InvokeError of kind %v, got %v", kind, err)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("want kind %v, got %v: %v", kind, ie.Kind, err)
	}
	return ie
}

// eval runs `return <expr>` inside handle and returns the converted result.
func eval(t testing.TB, expr string) any {
	t.Helper()
	f := newFn(t, "function handle(event) return "+expr+" end", Limits{}, Host{})
	return call(t, f, nil).value()
}

// value decodes the result's JSON the way the tests compare it: integers as int64, other
// numbers as float64, objects and arrays as map[string]any and []any.
func (r *Result) value() any {
	if r.Value == nil {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(r.Value))
	d.UseNumber()
	var x any
	if err := d.Decode(&x); err != nil {
		panic(fmt.Sprintf("result %q: %v", r.Value, err))
	}
	return fromJSON(x)
}

func fromJSON(x any) any {
	switch x := x.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, v := range x {
			x[k] = fromJSON(v)
		}
	case []any:
		for i, v := range x {
			x[i] = fromJSON(v)
		}
	}
	return x
}
