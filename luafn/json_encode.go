package luafn

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"
)

// Encoding of Lua values as JSON: the rules are in json.go.

// tableShape tells how a table converts: as an array of n items, or as an object.
func tableShape(t *lua.LTable) (n int, isArray bool) {
	array, strs, others := t.Parts()
	if strs.Len() > 0 || len(others) > 0 {
		return 0, false
	}
	n = len(array)
	for n > 0 && array[n-1] == lua.LNil {
		n--
	}
	if n == 0 {
		return 0, false // the empty table is an object
	}
	for _, x := range array[:n] {
		if x == lua.LNil {
			return 0, false // a hole: keys are not 1..n
		}
	}
	return n, true
}

// objectKey converts a table key to a JSON object key.
func objectKey(k lua.LValue) (string, error) {
	switch k := k.(type) {
	case lua.LString:
		return string(k), nil
	case lua.LNumber:
		b, err := appendNumber(nil, float64(k))
		return string(b), err
	}
	return "", fmt.Errorf("cannot use a %s as an object key", k.Type())
}

// sortedKeys returns t's keys (all non-nil entries) in a stable order: strings, then
// numbers, each sorted; other keys after them.
func sortedKeys(t *lua.LTable) []lua.LValue {
	var keys []lua.LValue
	t.ForEach(func(k, _ lua.LValue) { keys = append(keys, k) })
	slices.SortFunc(keys, func(a, b lua.LValue) int {
		as, aStr := a.(lua.LString)
		bs, bStr := b.(lua.LString)
		switch {
		case aStr && bStr:
			return strings.Compare(string(as), string(bs))
		case aStr:
			return -1
		case bStr:
			return 1
		}
		an, aNum := a.(lua.LNumber)
		bn, bNum := b.(lua.LNumber)
		switch {
		case aNum && bNum:
			if an < bn {
				return -1
			} else if an > bn {
				return 1
			}
			return 0
		case aNum:
			return -1
		case bNum:
			return 1
		}
		return 0
	})
	return keys
}

// appendNumber writes x as JSON: integral values as integers, others like encoding/json.
func appendNumber(b []byte, x float64) ([]byte, error) {
	switch {
	case math.IsNaN(x):
		return b, errors.New("cannot convert NaN to JSON")
	case math.IsInf(x, 1):
		return b, errors.New("cannot convert inf to JSON")
	case math.IsInf(x, -1):
		return b, errors.New("cannot convert -inf to JSON")
	}
	if x == math.Trunc(x) && math.Abs(x) < 1e21 {
		if math.Abs(x) <= maxSafeInt {
			return strconv.AppendInt(b, int64(x), 10), nil
		}
		return strconv.AppendFloat(b, x, 'f', -1, 64), nil
	}
	abs := math.Abs(x)
	if abs < 1e-6 || abs >= 1e21 {
		n := len(b)
		b = strconv.AppendFloat(b, x, 'e', -1, 64)
		// Like encoding/json: e-07 becomes e-7.
		if m := len(b); m-n >= 4 && b[m-4] == 'e' && b[m-3] == '-' && b[m-2] == '0' {
			b[m-2] = b[m-1]
			b = b[:m-1]
		}
		return b, nil
	}
	return strconv.AppendFloat(b, x, 'f', -1, 64), nil
}

// errNotUTF8 refuses a string that JSON cannot hold: replacing its bytes (as encoding/json
// does) would store something else than the function wrote, and nobody would know.
var errNotUTF8 = errors.New("a string is not valid UTF-8: JSON holds text only, so encode binary data first (for example as hex)")

// appendString writes s as a JSON string; invalid UTF-8 is errNotUTF8.
func appendString(b []byte, s string) ([]byte, error) {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return b, errNotUTF8
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"'), nil
}

// jsonEncoder writes Lua values as JSON, charging the output as it grows.
type jsonEncoder struct {
	v       *vm
	pend    building // the output, until it is returned
	buf     []byte
	charged int
	path    []*lua.LTable // tables being encoded, to find cycles
	fields  []field       // fields of the objects being encoded, in output order
}

type field struct {
	key string
	val lua.LValue
}

// encodeJSON returns x as JSON, in a slice of its own and of its exact size. It writes
// into the VM's scratch buffer first: growing a fresh slice by appending cost as many
// allocations as doublings, on every result and every kv.set.
func (v *vm) encodeJSON(x lua.LValue) ([]byte, error) {
	e := jsonEncoder{v: v, pend: building{v: v}, buf: v.jsonBuf[:0], fields: v.jsonFields[:0], path: v.jsonPath[:0]}
	defer e.pend.release()
	err := e.value(x, 0)
	if cap(e.buf) <= maxScratch {
		v.jsonBuf = e.buf[:0]
	}
	clear(e.fields[:cap(e.fields)])
	v.jsonFields = e.fields[:0]
	clear(e.path[:cap(e.path)])
	v.jsonPath = e.path[:0]
	if err != nil {
		return nil, err
	}
	return bytes.Clone(e.buf), nil
}

// flush charges output written since the last charge.
func (e *jsonEncoder) flush() error {
	if n := len(e.buf) - e.charged; n > 0 {
		e.charged = len(e.buf)
		if !e.pend.add(int64(n)) {
			return e.v.tripped.Load()
		}
	}
	return nil
}

func (e *jsonEncoder) value(x lua.LValue, depth int) error {
	switch x := x.(type) {
	case *lua.LNilType:
		e.buf = append(e.buf, "null"...)
	case lua.LBool:
		e.buf = strconv.AppendBool(e.buf, bool(x))
	case lua.LNumber:
		var err error
		if e.buf, err = appendNumber(e.buf, float64(x)); err != nil {
			return err
		}
	case lua.LString:
		// Charge before writing: the string itself may be large.
		if !e.pend.add(int64(len(x)) + 2) {
			return e.v.tripped.Load()
		}
		var err error
		if e.buf, err = appendString(e.buf, string(x)); err != nil {
			return fmt.Errorf("cannot convert to JSON: %w", err)
		}
		e.charged += len(x) + 2 // escapes, if any, are charged by the next flush
	case *lua.LTable:
		return e.table(x, depth+1)
	default:
		return fmt.Errorf("cannot convert a %s to JSON", x.Type())
	}
	if len(e.buf)-e.charged > 4096 {
		return e.flush()
	}
	return nil
}

func (e *jsonEncoder) table(t *lua.LTable, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("cannot convert to JSON: nested deeper than %d", maxDepth)
	}
	if slices.Contains(e.path, t) {
		return fmt.Errorf("cannot convert to JSON: %w", errCycle)
	}
	if err := e.flush(); err != nil {
		return err
	}
	e.v.raiseIfTripped()
	e.path = append(e.path, t)
	defer func() { e.path = e.path[:len(e.path)-1] }()
	if n, ok := tableShape(t); ok {
		e.buf = append(e.buf, '[')
		for i := 1; i <= n; i++ {
			if i > 1 {
				e.buf = append(e.buf, ',')
			}
			if err := e.value(t.RawGetInt(i), depth); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, ']')
		return nil
	}
	base := len(e.fields)
	defer func() { e.fields = e.fields[:base] }()
	if array, strs, others := t.Parts(); len(array) == 0 && len(others) == 0 {
		// The common object, with string keys only: its fields are sorted in the
		// encoder's reused slice, without boxing each key as sortedKeys does.
		for k, val := range strs.All() {
			if val != lua.LNil {
				e.fields = append(e.fields, field{k, val})
			}
		}
		slices.SortFunc(e.fields[base:], func(a, b field) int { return strings.Compare(a.key, b.key) })
	} else {
		for _, k := range sortedKeys(t) {
			ks, err := objectKey(k)
			if err != nil {
				return fmt.Errorf("cannot convert to JSON: %w", err)
			}
			e.fields = append(e.fields, field{ks, t.RawGet(k)})
		}
	}
	e.buf = append(e.buf, '{')
	for i, f := range e.fields[base:] {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		var err error
		if e.buf, err = appendString(e.buf, f.key); err != nil {
			return fmt.Errorf("cannot convert to JSON: key: %w", err)
		}
		e.buf = append(e.buf, ':')
		if err := e.value(f.val, depth); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, '}')
	return nil
}
