package luafn

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"
)

// Values between Lua and JSON (SPEC §4):
//
//   - a number with an integral value encodes as a JSON integer, any other as a float;
//     NaN and infinities are an error naming the value;
//   - a table whose keys are exactly 1..n encodes as an array; any other table as an
//     object, with number keys written as strings and keys sorted; the empty table
//     encodes as {} (an object, as lua-cjson does);
//   - a table reachable from itself is an error ("cycle"), as is nesting deeper than
//     maxDepth or a key or value JSON cannot hold (boolean keys, functions);
//   - strings are bytes in Lua: invalid UTF-8 is encoded with U+FFFD in its place (as
//     encoding/json does); decoding keeps a string's bytes as they are;
//   - JSON null decodes to nil: the key is absent, or the array has a hole;
//   - JSON integers decode to Lua numbers, exact up to 2^53.
//
// Decoding charges what it builds to the memory bound, as it builds it, so a small
// JSON text cannot expand into a large heap unnoticed.

const (
	maxDepth   = 128      // nesting of tables in both directions
	maxSafeInt = 1 << 53  // integers beyond this are not exact in a float64
	maxScratch = 64 << 10 // bytes of scratch a VM keeps between conversions
)

var errCycle = errors.New("cycle in table")

// jsonDecoder builds Lua values straight from JSON text.
type jsonDecoder struct {
	v       *vm
	pend    building // what is decoded is held here until the whole value is built
	s       string
	pos     int
	scratch []lua.LValue // pending keys and values of the tables being built
}

// decodeJSON decodes s into a Lua value.
func (v *vm) decodeJSON(s string) (lua.LValue, error) {
	d := jsonDecoder{v: v, s: s, scratch: v.scratch[:0], pend: building{v: v}}
	defer d.pend.release()
	val, err := d.value(0)
	if err == nil {
		d.space()
		if d.pos < len(d.s) {
			err = d.errorf("unexpected %q after the value", d.s[d.pos])
		}
	}
	clear(d.scratch[:cap(d.scratch)])
	if cap(d.scratch) <= maxScratch/16 {
		v.scratch = d.scratch[:0]
	}
	return val, err
}

func (d *jsonDecoder) errorf(format string, args ...any) error {
	return fmt.Errorf("json at byte %d: %s", d.pos, fmt.Sprintf(format, args...))
}

func (d *jsonDecoder) space() {
	for d.pos < len(d.s) {
		switch d.s[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *jsonDecoder) charge(n int64) error {
	if !d.pend.add(n) {
		return d.v.tripped.Load()
	}
	return nil
}

func (d *jsonDecoder) value(depth int) (lua.LValue, error) {
	d.space()
	if d.pos >= len(d.s) {
		return nil, d.errorf("unexpected end of input")
	}
	switch c := d.s[d.pos]; {
	case c == '{':
		return d.object(depth + 1)
	case c == '[':
		return d.array(depth + 1)
	case c == '"':
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		return lua.LString(s), nil
	case c == '-' || isdigit(c):
		return d.number()
	case strings.HasPrefix(d.s[d.pos:], "true"):
		d.pos += 4
		return lua.LTrue, nil
	case strings.HasPrefix(d.s[d.pos:], "false"):
		d.pos += 5
		return lua.LFalse, nil
	case strings.HasPrefix(d.s[d.pos:], "null"):
		d.pos += 4
		return lua.LNil, nil
	default:
		return nil, d.errorf("unexpected %q", c)
	}
}

func (d *jsonDecoder) object(depth int) (lua.LValue, error) {
	if depth > maxDepth {
		return nil, d.errorf("nested deeper than %d", maxDepth)
	}
	d.pos++ // {
	base := len(d.scratch)
	d.space()
	if d.pos < len(d.s) && d.s[d.pos] == '}' {
		d.pos++
	} else {
		for {
			d.space()
			if d.pos >= len(d.s) || d.s[d.pos] != '"' {
				return nil, d.errorf("expected a string key")
			}
			k, err := d.key()
			if err != nil {
				return nil, err
			}
			d.space()
			if d.pos >= len(d.s) || d.s[d.pos] != ':' {
				return nil, d.errorf("expected ':'")
			}
			d.pos++
			val, err := d.value(depth)
			if err != nil {
				return nil, err
			}
			d.scratch = append(d.scratch, k, val)
			d.space()
			if d.pos < len(d.s) && d.s[d.pos] == ',' {
				d.pos++
				continue
			}
			if d.pos < len(d.s) && d.s[d.pos] == '}' {
				d.pos++
				break
			}
			return nil, d.errorf("expected ',' or '}'")
		}
	}
	pairs := d.scratch[base:]
	n := len(pairs) / 2
	if err := d.charge(sizeTable + int64(n)*sizeStrEntry); err != nil {
		return nil, err
	}
	t := d.v.L.CreateTable(0, n)
	for i := 0; i < len(pairs); i += 2 {
		t.RawSetString(string(pairs[i].(lua.LString)), pairs[i+1])
	}
	d.scratch = d.scratch[:base]
	return t, nil
}

func (d *jsonDecoder) array(depth int) (lua.LValue, error) {
	if depth > maxDepth {
		return nil, d.errorf("nested deeper than %d", maxDepth)
	}
	d.pos++ // [
	base := len(d.scratch)
	d.space()
	if d.pos < len(d.s) && d.s[d.pos] == ']' {
		d.pos++
	} else {
		for {
			val, err := d.value(depth)
			if err != nil {
				return nil, err
			}
			d.scratch = append(d.scratch, val)
			d.space()
			if d.pos < len(d.s) && d.s[d.pos] == ',' {
				d.pos++
				continue
			}
			if d.pos < len(d.s) && d.s[d.pos] == ']' {
				d.pos++
				break
			}
			return nil, d.errorf("expected ',' or ']'")
		}
	}
	items := d.scratch[base:]
	if err := d.charge(sizeTable + int64(len(items))*sizeSlot); err != nil {
		return nil, err
	}
	t := d.v.L.CreateTable(len(items), 0)
	for i, val := range items {
		if val != lua.LNil {
			t.RawSetInt(i+1, val)
		}
	}
	d.scratch = d.scratch[:base]
	return t, nil
}

func (d *jsonDecoder) number() (lua.LValue, error) {
	start := d.pos
	s := d.s
	if s[d.pos] == '-' {
		d.pos++
	}
	digits := func() int {
		n := 0
		for d.pos < len(s) && isdigit(s[d.pos]) {
			d.pos++
			n++
		}
		return n
	}
	if d.pos < len(s) && s[d.pos] == '0' {
		d.pos++
	} else if digits() == 0 {
		return nil, d.errorf("invalid number")
	}
	if d.pos < len(s) && s[d.pos] == '.' {
		d.pos++
		if digits() == 0 {
			return nil, d.errorf("invalid number")
		}
	}
	if d.pos < len(s) && (s[d.pos] == 'e' || s[d.pos] == 'E') {
		d.pos++
		if d.pos < len(s) && (s[d.pos] == '+' || s[d.pos] == '-') {
			d.pos++
		}
		if digits() == 0 {
			return nil, d.errorf("invalid number")
		}
	}
	f, err := strconv.ParseFloat(s[start:d.pos], 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil, d.errorf("invalid number")
	}
	if err := d.charge(sizeNumber); err != nil {
		return nil, err
	}
	return lua.LNumber(f), nil
}

// Object keys repeat from one payload to the next: a small per-VM cache of boxed keys
// saves two allocations per key. It only holds short keys without escapes.
const (
	maxCachedKeys   = 256
	maxCachedKeyLen = 32
)

// key reads an object key at d.pos (which is '"').
func (d *jsonDecoder) key() (lua.LValue, error) {
	s := d.s
	end := d.pos + 1
	for end < len(s) && end-d.pos <= maxCachedKeyLen+1 && s[end] != '"' && s[end] != '\\' && s[end] >= 0x20 {
		end++
	}
	if end < len(s) && s[end] == '"' {
		raw := s[d.pos+1 : end]
		if k, ok := d.v.keys[raw]; ok {
			d.pos = end + 1
			if err := d.charge(sizeString + int64(len(raw))); err != nil {
				return nil, err
			}
			return k, nil
		}
	}
	str, err := d.str()
	if err != nil {
		return nil, err
	}
	k := lua.LValue(lua.LString(str))
	if len(str) <= maxCachedKeyLen && len(d.v.keys) < maxCachedKeys {
		if d.v.keys == nil {
			d.v.keys = make(map[string]lua.LValue)
		}
		d.v.keys[str] = k
	}
	return k, nil
}

// str reads a JSON string at d.pos (which is '"') and returns its value, a copy that
// does not keep the input alive.
func (d *jsonDecoder) str() (string, error) {
	d.pos++
	start := d.pos
	s := d.s
	for d.pos < len(s) {
		c := s[d.pos]
		if c == '"' {
			if err := d.charge(sizeString + int64(d.pos-start)); err != nil {
				return "", err
			}
			out := strings.Clone(s[start:d.pos])
			d.pos++
			return out, nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		d.pos++
	}
	// Slow path: escapes.
	var b []byte
	b = append(b, s[start:d.pos]...)
	for d.pos < len(s) {
		c := s[d.pos]
		switch {
		case c == '"':
			d.pos++
			if err := d.charge(sizeString + int64(len(b))); err != nil {
				return "", err
			}
			return string(b), nil
		case c < 0x20:
			return "", d.errorf("control character in string")
		case c != '\\':
			b = append(b, c)
			d.pos++
			continue
		}
		d.pos++
		if d.pos >= len(s) {
			break
		}
		e := s[d.pos]
		d.pos++
		switch e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return "", d.errorf("invalid \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if strings.HasPrefix(s[d.pos:], "\\u") {
					save := d.pos
					d.pos += 2
					if r2, ok = d.hex4(); !ok {
						return "", d.errorf("invalid \\u escape")
					}
					if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
						d.pos = save // not a pair: the second escape stands alone
					}
				} else {
					r = utf8.RuneError
				}
			}
			b = utf8.AppendRune(b, r)
		default:
			return "", d.errorf("invalid escape '\\%c'", e)
		}
	}
	return "", d.errorf("unterminated string")
}

func (d *jsonDecoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.s) {
		return 0, false
	}
	n, err := strconv.ParseUint(d.s[d.pos:d.pos+4], 16, 32)
	if err != nil {
		return 0, false
	}
	d.pos += 4
	return rune(n), true
}

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
