package luafn

import (
	"sort"

	lua "github.com/yuin/gopher-lua"
)

// The table library with Lua 5.1 semantics, refusing library tables, charging growth
// (table.insert(t, 1e8, x) would otherwise make gopher-lua allocate 1.6 GB of nils) and
// watching for a tripped bound inside long sorts.

func (v *vm) tableFuncs() map[string]lua.LGFunction {
	return map[string]lua.LGFunction{
		"concat": v.tabConcat,
		"getn":   tabGetn,
		"insert": v.tabInsert,
		"maxn":   tabMaxn,
		"remove": v.tabRemove,
		"sort":   v.tabSort,
	}
}

func tabGetn(L *lua.LState) int {
	L.Push(lua.LNumber(L.CheckTable(1).Len()))
	return 1
}

func tabMaxn(L *lua.LState) int {
	m := 0.0
	L.CheckTable(1).ForEach(func(k, _ lua.LValue) {
		if n, ok := k.(lua.LNumber); ok && float64(n) > m {
			m = float64(n)
		}
	})
	L.Push(lua.LNumber(m))
	return 1
}

func (v *vm) tabInsert(L *lua.LState) int {
	t := L.CheckTable(1)
	v.checkWritable(t, "table.insert")
	e := int64(t.Len()) + 1 // first empty element
	pos := e
	switch L.GetTop() {
	case 2:
	case 3:
		pos = checkInt(L, 2)
		if pos < 1 {
			// Lua 5.1 would shift every slot from #t down to pos: 2^63 of them for
			// a very negative pos. Lua 5.2's rule instead.
			L.ArgError(2, "position out of bounds")
		}
		e = max(e, pos) // "grow" the array if necessary
	default:
		L.RaiseError("wrong number of arguments to 'insert'")
	}
	v.mustCharge(growth(t, lua.LNumber(e)))
	for i := e; i > pos; i-- { // move up elements
		t.RawSetInt(int(i), t.RawGetInt(int(i-1)))
	}
	t.RawSet(lua.LNumber(pos), L.Get(L.GetTop()))
	return 0
}

func (v *vm) tabRemove(L *lua.LState) int {
	t := L.CheckTable(1)
	v.checkWritable(t, "table.remove")
	e := int64(t.Len())
	pos := argInt(L, 2, e)
	if pos < 1 || pos > e {
		return 0
	}
	L.Push(t.RawGetInt(int(pos)))
	if array, _, _ := t.Parts(); e == int64(len(array)) {
		// Shrink the array part too: leaving a trailing nil would make every later
		// length computation scan it.
		t.Remove(int(pos))
		return 1
	}
	for ; pos < e; pos++ {
		t.RawSetInt(int(pos), t.RawGetInt(int(pos+1)))
	}
	t.RawSetInt(int(e), lua.LNil)
	return 1
}

func (v *vm) tabConcat(L *lua.LState) int {
	t := L.CheckTable(1)
	sep := ""
	if L.Get(2) != lua.LNil {
		sep = L.CheckString(2)
	}
	i := argInt(L, 3, 1)
	j := argInt(L, 4, int64(t.Len()))
	if i > j {
		L.Push(lua.LString(""))
		return 1
	}
	// Measure first, so the whole result is charged before it is built.
	total := int64(sizeString)
	for k := i; k <= j; k++ {
		x := t.RawGetInt(int(k))
		if !lua.LVCanConvToString(x) {
			L.RaiseError("invalid value (at index %d) in table for 'concat'", k)
		}
		total += int64(len(lua.LVAsString(x)))
		if k < j {
			total += int64(len(sep))
		}
		if total > v.limits.Memory {
			break // mustCharge below trips with the real figures
		}
	}
	pend := v.build()
	defer pend.release()
	pend.mustAdd(total)
	buf := make([]byte, 0, total-sizeString)
	for k := i; k <= j; k++ {
		buf = append(buf, lua.LVAsString(t.RawGetInt(int(k)))...)
		if k < j {
			buf = append(buf, sep...)
		}
	}
	L.Push(lua.LString(buf))
	return 1
}

func (v *vm) tabSort(L *lua.LState) int {
	t := L.CheckTable(1)
	v.checkWritable(t, "table.sort")
	var cmp *lua.LFunction
	if L.Get(2) != lua.LNil {
		cmp = L.CheckFunction(2)
	}
	n := t.Len()
	pend := v.build()
	defer pend.release()
	pend.mustAdd(int64(n) * sizeSlot)
	vals := make([]lua.LValue, n)
	for i := range vals {
		vals[i] = t.RawGetInt(i + 1)
	}
	compares := 0
	sort.Sort(&luaSorter{vals: vals, less: func(a, b lua.LValue) bool {
		if compares++; compares&4095 == 0 {
			v.raiseIfTripped()
		}
		if cmp == nil {
			return L.LessThan(a, b)
		}
		L.Push(cmp)
		L.Push(a)
		L.Push(b)
		L.Call(2, 1)
		r := lua.LVAsBool(L.Get(-1))
		L.Pop(1)
		return r
	}})
	for i, x := range vals {
		t.RawSetInt(i+1, x)
	}
	return 0
}

type luaSorter struct {
	vals []lua.LValue
	less func(a, b lua.LValue) bool
}

func (s *luaSorter) Len() int           { return len(s.vals) }
func (s *luaSorter) Swap(i, j int)      { s.vals[i], s.vals[j] = s.vals[j], s.vals[i] }
func (s *luaSorter) Less(i, j int) bool { return s.less(s.vals[i], s.vals[j]) }
