package luafn

import (
	"errors"
	"fmt"
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
//   - strings are bytes in Lua: a string that is not valid UTF-8 is an error
//     (errNotUTF8), not stored altered; decoding keeps a string's bytes as they are;
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
