package fntest

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moongate/moongate/luafn"
)

// memKV is a function's KV for a test case: what the store holds, in memory, with the
// same operations (set with a TTL on the test's clock, delete, incr of a JSON number).
type memKV struct {
	now     func() time.Time
	values  map[string][]byte
	expires map[string]time.Time
}

func newMemKV(now func() time.Time) *memKV {
	return &memKV{now: now, values: map[string][]byte{}, expires: map[string]time.Time{}}
}

// put sets key to v as a test file gives it.
func (m *memKV) put(key string, v any) {
	b, _ := json.Marshal(jsonable(v))
	m.values[key] = b
}

func (m *memKV) get(key string) ([]byte, bool) {
	if exp, ok := m.expires[key]; ok && !m.now().Before(exp) {
		delete(m.values, key)
		delete(m.expires, key)
	}
	v, ok := m.values[key]
	return v, ok
}

// KVGet implements luafn.KVReader.
func (m *memKV) KVGet(_, key string) ([]byte, bool, error) {
	v, ok := m.get(key)
	return v, ok, nil
}

// KVKeys implements luafn.KVReader.
func (m *memKV) KVKeys(_, prefix string, limit int) ([]string, error) {
	var keys []string
	for k := range m.values {
		if _, ok := m.get(k); ok && strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	return keys, nil
}

// apply commits an invocation's KV operations, in order; like the store, it refuses an
// incr of a value that is not a number.
func (m *memKV) apply(ops []luafn.KVOp) error {
	for _, op := range ops {
		switch op.Op {
		case luafn.KVSet:
			m.values[op.Key] = op.Value
			delete(m.expires, op.Key)
			if op.TTL > 0 {
				m.expires[op.Key] = m.now().Add(op.TTL)
			}
		case luafn.KVDel:
			delete(m.values, op.Key)
			delete(m.expires, op.Key)
		case luafn.KVIncr:
			n := 0.0
			if v, ok := m.get(op.Key); ok {
				var err error
				if n, err = strconv.ParseFloat(string(v), 64); err != nil {
					return fmt.Errorf("kv.incr %q: the value %s is not a number: the gateway's commit would fail", op.Key, v)
				}
			}
			m.values[op.Key] = []byte(strconv.FormatFloat(n+op.Delta, 'g', -1, 64))
		}
	}
	return nil
}
