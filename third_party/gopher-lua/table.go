package lua

const defaultArrayCap = 32
const defaultHashCap = 32

type lValueArraySorter struct {
	L      *LState
	Fn     *LFunction
	Values []LValue
}

func (lv lValueArraySorter) Len() int {
	return len(lv.Values)
}

func (lv lValueArraySorter) Swap(i, j int) {
	lv.Values[i], lv.Values[j] = lv.Values[j], lv.Values[i]
}

func (lv lValueArraySorter) Less(i, j int) bool {
	if lv.Fn != nil {
		lv.L.Push(lv.Fn)
		lv.L.Push(lv.Values[i])
		lv.L.Push(lv.Values[j])
		lv.L.Call(2, 1)
		return LVAsBool(lv.L.reg.Pop())
	}
	return lessThan(lv.L, lv.Values[i], lv.Values[j])
}

func newLTable(acap int, hcap int) *LTable {
	if acap < 0 {
		acap = 0
	}
	if hcap < 0 {
		hcap = 0
	}
	tb := &LTable{}
	tb.Metatable = LNil
	if acap != 0 {
		tb.array = make([]LValue, 0, acap)
	}
	switch {
	case hcap > smallStrKeys:
		tb.strdict = make(map[string]LValue, hcap)
	case hcap > 0:
		tb.strs = make([]strEntry, 0, hcap)
	}
	return tb
}

// smallStrKeys is the most string keys a table holds in its strs slice. Scanning a few
// short keys is faster than hashing them, and the slice is one allocation where a Go
// map is two and three times the bytes: most tables are small records (an event, a
// decoded JSON object, a reading to publish).
const smallStrKeys = 8

// strEntry is one string key of a small table and its value.
type strEntry struct {
	key   string
	value LValue
}

// getStr returns the value of a string key, or LNil.
func (tb *LTable) getStr(key string) LValue {
	if tb.strdict != nil {
		if v, ok := tb.strdict[key]; ok {
			return v
		}
		return LNil
	}
	for i := range tb.strs {
		if tb.strs[i].key == key {
			return tb.strs[i].value
		}
	}
	return LNil
}

// setSmallStr sets a string key while the table is small, and reports false when the
// key is new and there is no room left: the caller moves the keys to strdict.
func (tb *LTable) setSmallStr(key string, value LValue) bool {
	for i := range tb.strs {
		if tb.strs[i].key != key {
			continue
		}
		if value != LNil {
			tb.strs[i].value = value
			return true
		}
		// Deleted in order: a walk in progress follows keys, not positions.
		last := len(tb.strs) - 1
		copy(tb.strs[i:], tb.strs[i+1:])
		tb.strs[last] = strEntry{}
		tb.strs = tb.strs[:last]
		return true
	}
	if value == LNil {
		return true
	}
	if len(tb.strs) == smallStrKeys {
		return false
	}
	if tb.strs == nil {
		tb.strs = make([]strEntry, 0, 4)
	}
	tb.strs = append(tb.strs, strEntry{key, value})
	tb.notePeak()
	if tb.walk != nil { // boxing the key allocates: only once a walk needs it
		tb.noteKey(LString(key))
	}
	return true
}

// walkIndex is the order Next walks a table's hash part in: its keys, and each key's
// position.
type walkIndex struct {
	keys []LValue
	k2i  map[LValue]int
}

// noteKey adds a new key to the walk order, once a walk has built it.
func (tb *LTable) noteKey(key LValue) {
	w := tb.walk
	if w == nil {
		return
	}
	if _, ok := w.k2i[key]; !ok {
		w.k2i[key] = len(w.keys)
		w.keys = append(w.keys, key)
	}
}

// Len returns length of this LTable without using __len.
func (tb *LTable) Len() int {
	if tb.array == nil {
		return 0
	}
	var prev LValue = LNil
	for i := len(tb.array) - 1; i >= 0; i-- {
		v := tb.array[i]
		if prev == LNil && v != LNil {
			return i + 1
		}
		prev = v
	}
	return 0
}

// Append appends a given LValue to this LTable.
func (tb *LTable) Append(value LValue) {
	if value == LNil {
		return
	}
	if tb.array == nil {
		tb.array = make([]LValue, 0, defaultArrayCap)
	}
	if len(tb.array) == 0 || tb.array[len(tb.array)-1] != LNil {
		tb.array = append(tb.array, value)
	} else {
		i := len(tb.array) - 2
		for ; i >= 0; i-- {
			if tb.array[i] != LNil {
				break
			}
		}
		tb.array[i+1] = value
	}
}

// Insert inserts a given LValue at position `i` in this table.
func (tb *LTable) Insert(i int, value LValue) {
	if tb.array == nil {
		tb.array = make([]LValue, 0, defaultArrayCap)
	}
	if i > len(tb.array) {
		tb.RawSetInt(i, value)
		return
	}
	if i <= 0 {
		tb.RawSet(LNumber(i), value)
		return
	}
	i -= 1
	tb.array = append(tb.array, LNil)
	copy(tb.array[i+1:], tb.array[i:])
	tb.array[i] = value
}

// MaxN returns a maximum number key that nil value does not exist before it.
func (tb *LTable) MaxN() int {
	if tb.array == nil {
		return 0
	}
	for i := len(tb.array) - 1; i >= 0; i-- {
		if tb.array[i] != LNil {
			return i + 1
		}
	}
	return 0
}

// Remove removes from this table the element at a given position.
func (tb *LTable) Remove(pos int) LValue {
	if tb.array == nil {
		return LNil
	}
	larray := len(tb.array)
	if larray == 0 {
		return LNil
	}
	i := pos - 1
	oldval := LNil
	switch {
	case i >= larray:
		// nothing to do
	case i == larray-1 || i < 0:
		oldval = tb.array[larray-1]
		tb.array = tb.array[:larray-1]
	default:
		oldval = tb.array[i]
		copy(tb.array[i:], tb.array[i+1:])
		tb.array[larray-1] = nil
		tb.array = tb.array[:larray-1]
	}
	return oldval
}

// RawSet sets a given LValue to a given index without the __newindex metamethod.
// It is recommended to use `RawSetString` or `RawSetInt` for performance
// if you already know the given LValue is a string or number.
func (tb *LTable) RawSet(key LValue, value LValue) {
	switch v := key.(type) {
	case LNumber:
		if isArrayKey(v) {
			if tb.array == nil {
				tb.array = make([]LValue, 0, defaultArrayCap)
			}
			index := int(v) - 1
			alen := len(tb.array)
			switch {
			case index == alen:
				tb.array = append(tb.array, value)
			case index > alen:
				for i := 0; i < (index - alen); i++ {
					tb.array = append(tb.array, LNil)
				}
				tb.array = append(tb.array, value)
			case index < alen:
				tb.array[index] = value
			}
			return
		}
	case LString:
		tb.RawSetString(string(v), value)
		return
	}

	tb.RawSetH(key, value)
}

// RawSetInt sets a given LValue at a position `key` without the __newindex metamethod.
func (tb *LTable) RawSetInt(key int, value LValue) {
	if key < 1 || key >= MaxArrayIndex {
		tb.RawSetH(LNumber(key), value)
		return
	}
	if tb.array == nil {
		tb.array = make([]LValue, 0, 32)
	}
	index := key - 1
	alen := len(tb.array)
	switch {
	case index == alen:
		tb.array = append(tb.array, value)
	case index > alen:
		for i := 0; i < (index - alen); i++ {
			tb.array = append(tb.array, LNil)
		}
		tb.array = append(tb.array, value)
	case index < alen:
		tb.array[index] = value
	}
}

// RawSetString sets a given LValue to a given string index without the __newindex metamethod.
func (tb *LTable) RawSetString(key string, value LValue) {
	if tb.strdict == nil {
		if tb.setSmallStr(key, value) {
			return
		}
		tb.strdict = make(map[string]LValue, defaultHashCap)
		for _, e := range tb.strs {
			tb.strdict[e.key] = e.value
		}
		tb.strs = nil
	}
	if value == LNil {
		// TODO tb.keys and tb.k2i should also be removed
		delete(tb.strdict, key)
	} else {
		tb.strdict[key] = value
		tb.notePeak()
		if tb.walk != nil {
			tb.noteKey(LString(key))
		}
	}
}

// RawSetH sets a given LValue to a given index without the __newindex metamethod.
func (tb *LTable) RawSetH(key LValue, value LValue) {
	if s, ok := key.(LString); ok {
		tb.RawSetString(string(s), value)
		return
	}
	if tb.dict == nil {
		tb.dict = make(map[LValue]LValue, len(tb.strdict))
	}
	if value == LNil {
		// TODO tb.keys and tb.k2i should also be removed
		delete(tb.dict, key)
	} else {
		tb.dict[key] = value
		tb.notePeak()
		tb.noteKey(key)
	}
}

// RawGet returns an LValue associated with a given key without __index metamethod.
func (tb *LTable) RawGet(key LValue) LValue {
	switch v := key.(type) {
	case LNumber:
		if isArrayKey(v) {
			if tb.array == nil {
				return LNil
			}
			index := int(v) - 1
			if index >= len(tb.array) {
				return LNil
			}
			return tb.array[index]
		}
	case LString:
		return tb.getStr(string(v))
	}
	if tb.dict == nil {
		return LNil
	}
	if v, ok := tb.dict[key]; ok {
		return v
	}
	return LNil
}

// RawGetInt returns an LValue at position `key` without __index metamethod.
func (tb *LTable) RawGetInt(key int) LValue {
	if tb.array == nil {
		return LNil
	}
	index := int(key) - 1
	if index >= len(tb.array) || index < 0 {
		return LNil
	}
	return tb.array[index]
}

// RawGet returns an LValue associated with a given key without __index metamethod.
func (tb *LTable) RawGetH(key LValue) LValue {
	if s, sok := key.(LString); sok {
		return tb.getStr(string(s))
	}
	if tb.dict == nil {
		return LNil
	}
	if v, ok := tb.dict[key]; ok {
		return v
	}
	return LNil
}

// RawGetString returns an LValue associated with a given key without __index metamethod.
func (tb *LTable) RawGetString(key string) LValue {
	return tb.getStr(key)
}

// ForEach iterates over this table of elements, yielding each in turn to a given function.
func (tb *LTable) ForEach(cb func(LValue, LValue)) {
	if tb.array != nil {
		for i, v := range tb.array {
			if v != LNil {
				cb(LNumber(i+1), v)
			}
		}
	}
	for _, e := range tb.strs {
		cb(LString(e.key), e.value)
	}
	if tb.strdict != nil {
		for k, v := range tb.strdict {
			if v != LNil {
				cb(LString(k), v)
			}
		}
	}
	if tb.dict != nil {
		for k, v := range tb.dict {
			if v != LNil {
				cb(k, v)
			}
		}
	}
}

// This function is equivalent to lua_next ( http://www.lua.org/manual/5.1/manual.html#lua_next ).
func (tb *LTable) Next(key LValue) (LValue, LValue) {
	if tb.walk == nil && tb.hashLen() > 0 {
		tb.indexKeys()
	}
	init := false
	if key == LNil {
		key = LNumber(0)
		init = true
	}

	if init || key != LNumber(0) {
		if kv, ok := key.(LNumber); ok && isInteger(kv) && int(kv) >= 0 && kv < LNumber(MaxArrayIndex) {
			index := int(kv)
			if tb.array != nil {
				for ; index < len(tb.array); index++ {
					if v := tb.array[index]; v != LNil {
						return LNumber(index + 1), v
					}
				}
			}
			if tb.array == nil || index == len(tb.array) {
				if tb.hashLen() == 0 {
					return LNil, LNil
				}
				key = tb.walk.keys[0]
				if v := tb.RawGetH(key); v != LNil {
					return key, v
				}
			}
		}
	}

	w := tb.walk
	if w == nil {
		return LNil, LNil
	}
	for i := w.k2i[key] + 1; i < len(w.keys); i++ {
		key := w.keys[i]
		if v := tb.RawGetH(key); v != LNil {
			return key, v
		}
	}
	return LNil, LNil
}

// indexKeys builds the order Next walks the hash part in, on the first walk: most tables
// are never walked, and keeping keys and k2i from the first write doubled the cost of
// every table with string keys.
func (tb *LTable) indexKeys() {
	n := tb.hashLen()
	w := &walkIndex{keys: make([]LValue, 0, n), k2i: make(map[LValue]int, n)}
	tb.walk = w
	add := func(k LValue) {
		w.k2i[k] = len(w.keys)
		w.keys = append(w.keys, k)
	}
	for _, e := range tb.strs {
		add(LString(e.key))
	}
	for k, v := range tb.strdict {
		if v != LNil {
			add(LString(k))
		}
	}
	for k, v := range tb.dict {
		if v != LNil {
			add(k)
		}
	}
}

func (tb *LTable) notePeak() {
	if n := tb.hashLen(); n > tb.hashPeak {
		tb.hashPeak = n
	}
}

// hashLen is the number of entries in the hash parts.
func (tb *LTable) hashLen() int { return len(tb.strs) + len(tb.strdict) + len(tb.dict) }
