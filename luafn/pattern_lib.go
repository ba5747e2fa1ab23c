package luafn

import (
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// string.find, match, gmatch and gsub on the step-counted matcher of pattern.go.

// substring returns src[i:j] as a Lua string of its own: a Go substring would keep the
// whole of src alive while the memory walk counts only its length.
func (v *vm) substring(src string, i, j int) lua.LString {
	if i == 0 && j == len(src) {
		return lua.LString(src)
	}
	v.mustCharge(sizeString + int64(j-i))
	return lua.LString(strings.Clone(src[i:j]))
}

// posrelat converts a relative string position: negative means from the end.
func posrelat(pos int64, n int) int64 {
	if pos < 0 {
		pos += int64(n) + 1
	}
	return max(pos, 0)
}

func (v *vm) strFind(L *lua.LState) int  { return v.findAux(L, true) }
func (v *vm) strMatch(L *lua.LState) int { return v.findAux(L, false) }

func (v *vm) findAux(L *lua.LState, find bool) int {
	s := L.CheckString(1)
	pat := L.CheckString(2)
	init := posrelat(argInt(L, 3, 1), len(s)) - 1
	if init < 0 {
		init = 0
	} else if init > int64(len(s)) {
		init = int64(len(s))
	}
	if find && (lua.LVAsBool(L.Get(4)) || !strings.ContainsAny(pat, patSpecials)) {
		if i := strings.Index(s[init:], pat); i >= 0 {
			start := int(init) + i
			L.Push(lua.LNumber(start + 1))
			L.Push(lua.LNumber(start + len(pat)))
			return 2
		}
		L.Push(lua.LNil)
		return 1
	}
	ms := v.newMatch(s, pat)
	p := 0
	anchor := len(pat) > 0 && pat[0] == '^'
	if anchor {
		p = 1
	}
	for s1 := int(init); ; s1++ {
		ms.level, ms.depth = 0, 0
		if e := ms.match(s1, p); e != -1 {
			ms.done()
			if find {
				L.Push(lua.LNumber(s1 + 1))
				L.Push(lua.LNumber(e))
				return ms.pushCaptures(-1, -1, false) + 2
			}
			return ms.pushCaptures(s1, e, true)
		}
		if s1 >= len(s) || anchor {
			break
		}
	}
	ms.done()
	L.Push(lua.LNil)
	return 1
}

func (v *vm) strGmatch(L *lua.LState) int {
	s := L.CheckString(1)
	pat := L.CheckString(2)
	pos := 0
	L.Push(L.NewFunction(func(L *lua.LState) int {
		ms := v.newMatch(s, pat)
		for src := pos; src <= len(s); src++ {
			ms.level, ms.depth = 0, 0
			if e := ms.match(src, 0); e != -1 {
				ms.done()
				pos = e
				if e == src {
					pos++ // empty match: go at least one position
				}
				return ms.pushCaptures(src, e, true)
			}
		}
		ms.done()
		pos = len(s) + 1
		return 0
	}))
	return 1
}

func (v *vm) strGsub(L *lua.LState) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	repl := L.Get(3)
	switch repl.(type) {
	case lua.LNumber, lua.LString, *lua.LFunction, *lua.LTable:
	default:
		L.ArgError(3, "string/function/table expected")
	}
	maxN := argInt(L, 4, int64(len(src))+1)
	p := 0
	anchor := len(pat) > 0 && pat[0] == '^'
	if anchor {
		p = 1
	}
	ms := v.newMatch(src, pat)
	b := v.buildText()
	defer b.release()
	add := b.add
	n := int64(0)
	s := 0
	for n < maxN {
		ms.level, ms.depth = 0, 0
		e := ms.match(s, p)
		if e != -1 {
			n++
			v.addValue(ms, repl, s, e, add)
		}
		if e != -1 && e > s { // non-empty match: skip it
			s = e
		} else if s < len(src) {
			add(src[s : s+1])
			s++
		} else {
			break
		}
		if anchor {
			break
		}
	}
	ms.done()
	add(src[s:])
	L.Push(lua.LString(b.String()))
	L.Push(lua.LNumber(n))
	return 2
}

func (v *vm) addValue(ms *matchState, repl lua.LValue, s, e int, add func(string)) {
	L := v.L
	var val lua.LValue
	switch r := repl.(type) {
	case lua.LNumber, lua.LString:
		news := lua.LVAsString(r)
		for i := 0; i < len(news); i++ {
			c := news[i]
			if c != '%' {
				add(news[i : i+1])
				continue
			}
			i++
			switch {
			case i == len(news):
				add("\x00") // 5.1 reads the C string's terminator here
			case !isdigit(news[i]):
				add(news[i : i+1])
			case news[i] == '0':
				add(ms.src[s:e])
			default:
				add(lua.LVAsString(ms.captureValue(int(news[i]-'1'), s, e)))
			}
		}
		return
	case *lua.LFunction:
		L.Push(r)
		n := ms.pushCaptures(s, e, true)
		L.Call(n, 1)
		val = L.Get(-1)
		L.Pop(1)
	case *lua.LTable:
		val = L.GetTable(r, ms.captureValue(0, s, e))
	}
	switch x := val.(type) {
	case *lua.LNilType:
		add(ms.src[s:e])
	case lua.LBool:
		if x {
			L.RaiseError("invalid replacement value (a boolean)")
		}
		add(ms.src[s:e])
	case lua.LString, lua.LNumber:
		add(lua.LVAsString(x))
	default:
		L.RaiseError("invalid replacement value (a %s)", val.Type())
	}
}
