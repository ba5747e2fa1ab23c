package luafn

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// The string library, rewritten so that every function charges what it builds before
// building it (string.rep("x", 1e9) would otherwise allocate a gigabyte before any
// check), keeps Lua 5.1's byte semantics, and has no string.dump.

func (v *vm) stringFuncs() map[string]lua.LGFunction {
	return map[string]lua.LGFunction{
		"byte":    v.strByte,
		"char":    v.strChar,
		"find":    v.strFind,
		"format":  v.strFormat,
		"gmatch":  v.strGmatch,
		"gsub":    v.strGsub,
		"len":     strLen,
		"lower":   v.strLower,
		"match":   v.strMatch,
		"rep":     v.strRep,
		"reverse": v.strReverse,
		"sub":     v.strSub,
		"upper":   v.strUpper,
	}
}

// argInt reads an optional integer argument the way luaL_optinteger does: a number or
// a string that converts to one, truncated; def when the argument is nil or absent.
func argInt(L *lua.LState, n int, def int64) int64 {
	if L.Get(n) == lua.LNil {
		return def
	}
	return checkInt(L, n)
}

// checkInt reads a required integer argument, as luaL_checkinteger does.
func checkInt(L *lua.LState, n int) int64 {
	switch x := L.Get(n).(type) {
	case lua.LNumber:
		return numberToInt(float64(x))
	case lua.LString:
		if f, err := strconv.ParseFloat(strings.TrimSpace(string(x)), 64); err == nil {
			return numberToInt(f)
		}
	}
	L.TypeError(n, lua.LTNumber)
	return 0
}

// numberToInt truncates like a C cast, saturating instead of overflowing.
func numberToInt(f float64) int64 {
	switch {
	case math.IsNaN(f):
		return 0
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f <= math.MinInt64:
		return math.MinInt64
	}
	return int64(f)
}

func strLen(L *lua.LState) int {
	L.Push(lua.LNumber(len(L.CheckString(1))))
	return 1
}

func (v *vm) strSub(L *lua.LState) int {
	s := L.CheckString(1)
	i := posrelat(checkInt(L, 2), len(s))
	j := posrelat(argInt(L, 3, -1), len(s))
	if i < 1 {
		i = 1
	}
	if j > int64(len(s)) {
		j = int64(len(s))
	}
	if i > j {
		L.Push(lua.LString(""))
		return 1
	}
	L.Push(v.substring(s, int(i-1), int(j)))
	return 1
}

func (v *vm) strByte(L *lua.LState) int {
	s := L.CheckString(1)
	i := posrelat(argInt(L, 2, 1), len(s))
	j := posrelat(argInt(L, 3, i), len(s))
	if i < 1 {
		i = 1
	}
	if j > int64(len(s)) {
		j = int64(len(s))
	}
	if i > j {
		return 0
	}
	v.reserve(j - i + 1)
	for k := i; k <= j; k++ {
		L.Push(lua.LNumber(s[k-1]))
	}
	return int(j - i + 1)
}

func (v *vm) strChar(L *lua.LState) int {
	n := L.GetTop()
	v.mustCharge(sizeString + int64(n))
	b := make([]byte, n)
	for i := 1; i <= n; i++ {
		c := checkInt(L, i)
		if c < 0 || c > 255 {
			L.ArgError(i, "invalid value")
		}
		b[i-1] = byte(c)
	}
	L.Push(lua.LString(b))
	return 1
}

// mapBytes returns s with f applied to each byte, charged.
func (v *vm) mapBytes(s string, f func(byte) byte) lua.LString {
	v.mustCharge(sizeString + int64(len(s)))
	b := []byte(s)
	for i, c := range b {
		b[i] = f(c)
	}
	return lua.LString(b)
}

func (v *vm) strLower(L *lua.LState) int {
	L.Push(v.mapBytes(L.CheckString(1), tolower))
	return 1
}

func (v *vm) strUpper(L *lua.LState) int {
	L.Push(v.mapBytes(L.CheckString(1), func(c byte) byte {
		if islower(c) {
			return c - 32
		}
		return c
	}))
	return 1
}

func (v *vm) strReverse(L *lua.LState) int {
	s := L.CheckString(1)
	v.mustCharge(sizeString + int64(len(s)))
	b := make([]byte, len(s))
	for i := range len(s) {
		b[len(s)-1-i] = s[i]
	}
	L.Push(lua.LString(b))
	return 1
}

func (v *vm) strRep(L *lua.LState) int {
	s := L.CheckString(1)
	n := checkInt(L, 2)
	if n <= 0 || s == "" {
		L.Push(lua.LString(""))
		return 1
	}
	if n > v.limits.Memory/int64(len(s)) {
		v.trip(ErrMemory, fmt.Sprintf("memory limit exceeded: string.rep of %d x %d bytes, limit %d", n, len(s), v.limits.Memory))
		v.raiseIfTripped()
	}
	v.mustCharge(sizeString + n*int64(len(s)))
	L.Push(lua.LString(strings.Repeat(s, int(n))))
	return 1
}

// strFormat is Lua 5.1's string.format: widths and precisions have at most two digits,
// so one item is at most a few hundred bytes, and the result is charged as it grows.
func (v *vm) strFormat(L *lua.LState) int {
	f := L.CheckString(1)
	top := L.GetTop()
	arg := 1
	b := v.buildText()
	defer b.release()
	add := b.add
	for i := 0; i < len(f); {
		if f[i] != '%' {
			j := strings.IndexByte(f[i:], '%')
			if j < 0 {
				j = len(f) - i
			}
			add(f[i : i+j])
			i += j
			continue
		}
		i++
		if i < len(f) && f[i] == '%' {
			add("%")
			i++
			continue
		}
		arg++
		if arg > top {
			L.ArgError(arg, "no value")
		}
		spec, conv, next := scanFormat(L, f, i)
		i = next
		add(formatItem(L, arg, spec, conv))
	}
	v.mustCharge(sizeString)
	L.Push(lua.LString(b.String()))
	return 1
}

// fmtSpec is one parsed conversion's flags, width and precision.
type fmtSpec struct {
	flags     string
	width     int
	precision int // -1: none
}

func scanFormat(L *lua.LState, f string, i int) (fmtSpec, byte, int) {
	const flags = "-+ #0"
	start := i
	for i < len(f) && strings.IndexByte(flags, f[i]) >= 0 {
		i++
	}
	if i-start > len(flags) {
		L.RaiseError("invalid format (repeated flags)")
	}
	spec := fmtSpec{flags: f[start:i], precision: -1}
	digits := func() int {
		n, k := 0, 0
		for ; k < 2 && i < len(f) && isdigit(f[i]); k++ {
			n = n*10 + int(f[i]-'0')
			i++
		}
		return n
	}
	spec.width = digits()
	if i < len(f) && f[i] == '.' {
		i++
		spec.precision = digits()
	}
	if i < len(f) && isdigit(f[i]) {
		L.RaiseError("invalid format (width or precision too long)")
	}
	if i >= len(f) {
		L.RaiseError("%s", "invalid option '%' to 'format'")
	}
	return spec, f[i], i + 1
}

func (s fmtSpec) has(flag byte) bool { return strings.IndexByte(s.flags, flag) >= 0 }

// pad pads body to the width, by bytes as C does (Go's fmt pads by runes).
func (s fmtSpec) pad(body string, zeroOK bool) string {
	if len(body) >= s.width {
		return body
	}
	n := s.width - len(body)
	switch {
	case s.has('-'):
		return body + strings.Repeat(" ", n)
	case zeroOK && s.has('0'):
		sign := ""
		if body != "" && strings.IndexByte("+- ", body[0]) >= 0 {
			sign, body = body[:1], body[1:]
		}
		return sign + strings.Repeat("0", n) + body
	}
	return strings.Repeat(" ", n) + body
}

// goVerb builds a Go format for the numeric conversions, where Go and C agree.
func (s fmtSpec) goVerb(conv byte) string {
	var b strings.Builder
	b.WriteByte('%')
	b.WriteString(s.flags)
	if s.width > 0 {
		b.WriteString(strconv.Itoa(s.width))
	}
	if s.precision >= 0 {
		b.WriteByte('.')
		b.WriteString(strconv.Itoa(s.precision))
	}
	b.WriteByte(conv)
	return b.String()
}

func formatItem(L *lua.LState, arg int, spec fmtSpec, conv byte) string {
	switch conv {
	case 'c':
		return spec.pad(string([]byte{byte(checkInt(L, arg))}), false)
	case 'd', 'i':
		n := numberToInt(float64(L.CheckNumber(arg)))
		return fmt.Sprintf(spec.goVerb('d'), n)
	case 'o', 'u', 'x', 'X':
		n := uint64(numberToInt(float64(L.CheckNumber(arg))))
		if conv == 'u' {
			conv = 'd'
		}
		return fmt.Sprintf(spec.goVerb(conv), n)
	case 'e', 'E', 'f', 'g', 'G':
		x := float64(L.CheckNumber(arg))
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return spec.pad(cNonFinite(x, spec, conv), false)
		}
		if spec.precision < 0 && (conv == 'g' || conv == 'G') {
			spec.precision = 6 // C's default; Go's %g would print the shortest form
		}
		return fmt.Sprintf(spec.goVerb(conv), x)
	case 'q':
		return quoted(L.CheckString(arg))
	case 's':
		s := L.CheckString(arg)
		if spec.precision >= 0 && len(s) > spec.precision {
			s = s[:spec.precision]
		}
		return spec.pad(s, false)
	}
	L.RaiseError("invalid option '%%%c' to 'format'", conv)
	return ""
}

// cNonFinite prints infinities and NaN as C's printf does.
func cNonFinite(x float64, spec fmtSpec, conv byte) string {
	s := "nan"
	switch {
	case math.IsInf(x, 1):
		s = "inf"
	case math.IsInf(x, -1):
		s = "-inf"
	}
	if s[0] != '-' {
		if spec.has('+') {
			s = "+" + s
		} else if spec.has(' ') {
			s = " " + s
		}
	}
	if conv == 'E' || conv == 'G' {
		s = strings.ToUpper(s)
	}
	return s
}

// quoted is Lua 5.1's %q.
func quoted(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString("\\\n")
		case '\r':
			b.WriteString("\\r")
		case 0:
			b.WriteString("\\000")
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
