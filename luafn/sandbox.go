package luafn

import (
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// The sandbox: what a function can reach.
//
// Only base (minus the loaders, fenv, collectgarbage, newproxy), table, string (minus
// dump), math and the host modules exist. Coroutines are not offered: the list
// of libraries leaves them out, and a coroutine runs on a thread of its own, which the
// VM's hook does not watch, so it would escape the bounds.
//
// Every library table Lua can reach is a read-only proxy: an empty table whose
// metatable (hidden by __metatable) reads from the real library and refuses writes.
// rawset, table.insert/remove/sort and setmetatable refuse proxies too, and the real
// tables are reachable from nowhere. The string metatable is hidden the same way:
// getmetatable("") returns a read-only stand-in whose __index is the string proxy. So no
// invocation can change what a later one, in the same pooled VM, sees of the libraries.
//
// Globals a function sets itself persist between invocations on the same warm VM, as
// in Lambda; a VM is replaced after any bound trips, which resets them.

// missing are the standard globals the sandbox leaves out. Reading one gives nil, as
// for any unset global, so Lua's own error ("attempt to index a non-table object(nil)
// with key 'time'") would not say why; sandboxHint names the global instead.
var missing = map[string]string{
	"os": "; time.now() gives the time in unix ms", "io": "", "debug": "", "package": "", "coroutine": "",
	"require": "", "dofile": "", "loadfile": "", "load": "", "loadstring": "", "module": "",
	"collectgarbage": "", "getfenv": "", "setfenv": "", "newproxy": "",
}

// missingUse finds a name used as a table (os.time, os:x, os["x"]) or called (f(),
// f"s", f{...}) in a source line, outside a field access such as t.os.
var missingUse = regexp.MustCompile(`(?:^|[^\w.:])([A-Za-z_]\w*)\s*(?:[.:]\s*([A-Za-z_]\w*)|\[\s*["']([^"']*)["']|([("'{]|\[\[))`)

var indexedKey = regexp.MustCompile(`^attempt to index a non-table object\(nil\) with key '([^']*)'`)

// sandboxHint rewrites the error of a line that used a global the sandbox leaves out,
// e.g. os.time(), into one that says so. msg is Lua's message and line the source line
// it names; other errors come back unchanged.
func sandboxHint(msg, line string) string {
	key := indexedKey.FindStringSubmatch(msg)
	calling := strings.HasPrefix(msg, "attempt to call a non-function object")
	if key == nil && !calling {
		return msg
	}
	for _, m := range missingUse.FindAllStringSubmatch(line, -1) {
		extra, ok := missing[m[1]]
		if !ok {
			continue
		}
		if key != nil && (m[2] == key[1] || m[3] == key[1]) || calling && m[4] != "" {
			return fmt.Sprintf("%s is not available in the sandbox%s (%s)", m[1], extra, msg)
		}
	}
	return msg
}

// Base functions kept from gopher-lua as they are.
var keptBase = []string{
	"assert", "error", "getmetatable", "ipairs", "pcall", "rawequal",
	"rawget", "select", "tonumber", "tostring", "type", "xpcall", "_G", "_VERSION",
}

func (v *vm) openSandbox() error {
	L := v.L
	for _, open := range []lua.LGFunction{lua.OpenBase, lua.OpenMath} {
		L.Push(L.NewFunction(open))
		if err := L.PCall(0, 0, nil); err != nil {
			return fmt.Errorf("open lua libraries: %w", err)
		}
	}
	g := L.G.Global
	mathLib, _ := g.RawGetString("math").(*lua.LTable)
	if mathLib == nil {
		return fmt.Errorf("open lua libraries: no math library")
	}
	kept := make(map[string]lua.LValue, len(keptBase))
	for _, name := range keptBase {
		kept[name] = g.RawGetString(name)
	}
	// Start the globals afresh rather than deleting what we do not want: nothing
	// gopher-lua adds in a later version can slip through.
	globals := L.CreateTable(0, 40)
	for name, val := range kept {
		globals.RawSetString(name, val)
	}
	globals.RawSetString("_G", globals)
	L.G.Global = globals
	L.Env = globals
	// gopher-lua's module registry keeps the original tables; nothing reads it.
	L.G.Registry.RawSetString("_LOADED", lua.LNil)

	next := L.NewFunction(v.baseNext)
	globals.RawSetString("next", next)
	globals.RawSetString("pairs", L.NewClosure(basePairs, next))
	for name, fn := range map[string]lua.LGFunction{
		"rawset":       v.baseRawset,
		"setmetatable": v.baseSetmetatable,
		"unpack":       v.baseUnpack,
		"print":        v.basePrint,
	} {
		globals.RawSetString(name, L.NewFunction(fn))
	}

	mathLib.RawSetString("random", L.NewFunction(v.mathRandom))
	mathLib.RawSetString("randomseed", L.NewFunction(v.mathRandomseed))
	v.skipTable(mathLib)

	strLib := v.newLib(v.stringFuncs())
	libs := map[string]*lua.LTable{
		"string":  strLib,
		"table":   v.newLib(v.tableFuncs()),
		"math":    mathLib,
		"mqtt":    v.newLib(v.mqttFuncs()),
		"kv":      v.newLib(v.kvFuncs()),
		"cloud":   v.newLib(v.cloudFuncs()),
		"gpio":    v.newLib(v.gpioFuncs()),
		"log":     v.newLib(v.logFuncs()),
		"json":    v.newLib(v.jsonFuncs()),
		"time":    v.newLib(v.timeFuncs()),
		"env":     v.envTable(),
		"gateway": v.gatewayTable(),
	}
	for name, lib := range libs {
		globals.RawSetString(name, v.readOnly(lib))
	}

	// The string metatable: method calls ("x"):upper() index the real library
	// directly; getmetatable("") sees only a read-only stand-in.
	stand := L.CreateTable(0, 1)
	stand.RawSetString("__index", globals.RawGetString("string"))
	strMeta := L.CreateTable(0, 2)
	strMeta.RawSetString("__index", strLib)
	strMeta.RawSetString("__metatable", v.readOnly(stand))
	v.skipTable(stand)
	v.skipTable(strMeta)
	L.SetMetatable(lua.LString(""), strMeta)
	return nil
}

// newLib builds a library table from Go functions.
func (v *vm) newLib(funcs map[string]lua.LGFunction) *lua.LTable {
	t := v.L.CreateTable(0, len(funcs))
	for name, fn := range funcs {
		t.RawSetString(name, v.L.NewFunction(fn))
	}
	v.skipTable(t)
	return t
}

// skipTable excludes a sandbox table from memory walks: it is not the function's data.
func (v *vm) skipTable(t *lua.LTable) { v.skip[t] = struct{}{} }

// readOnly returns a read-only proxy for t.
func (v *vm) readOnly(t *lua.LTable) *lua.LTable {
	meta := v.L.CreateTable(0, 3)
	meta.RawSetString("__index", t)
	if v.refuse == nil {
		v.refuse = v.L.NewFunction(refuseWrite)
	}
	meta.RawSetString("__newindex", v.refuse)
	meta.RawSetString("__metatable", lua.LFalse)
	proxy := v.L.CreateTable(0, 0)
	proxy.Metatable = meta
	v.protected[proxy] = struct{}{}
	v.skipTable(meta)
	v.skipTable(proxy)
	return proxy
}

func refuseWrite(L *lua.LState) int {
	L.RaiseError("cannot set %s: library tables are read-only", L.Get(2).String())
	return 0
}

// checkWritable raises if t is a protected library table.
func (v *vm) checkWritable(t *lua.LTable, fn string) {
	if _, ok := v.protected[t]; ok {
		v.L.RaiseError("%s: library tables are read-only", fn)
	}
}

// baseNext is gopher-lua's next, charging the memory bound for the iteration index a
// table gets on its first walk (third_party/gopher-lua/MOONGATE.md): up to 48 bytes a
// key, more than the entries themselves.
func (v *vm) baseNext(L *lua.LState) int {
	t := L.CheckTable(1)
	if built, _, _ := t.NextIndex(); !built {
		_, strs, others := t.Parts()
		if n := strs.Len() + len(others); n > 0 && !v.charge(int64(n)*sizeKeyEntry) {
			v.raiseIfTripped()
		}
	}
	key, val := t.Next(L.Get(2))
	if key == lua.LNil {
		L.Push(lua.LNil)
		return 1
	}
	L.Push(key)
	L.Push(val)
	return 2
}

// basePairs is gopher-lua's pairs, with baseNext as its iterator.
func basePairs(L *lua.LState) int {
	t := L.CheckTable(1)
	L.Push(L.Get(lua.UpvalueIndex(1)))
	L.Push(t)
	L.Push(lua.LNil)
	return 3
}

// baseRawset is rawset, refusing library tables and charging growth.
func (v *vm) baseRawset(L *lua.LState) int {
	t := L.CheckTable(1)
	key := L.CheckAny(2)
	val := L.CheckAny(3)
	v.checkWritable(t, "rawset")
	switch k := key.(type) {
	case *lua.LNilType:
		L.RaiseError("table index is nil")
	case lua.LNumber:
		if math.IsNaN(float64(k)) {
			L.RaiseError("table index is NaN")
		}
	}
	v.mustCharge(growth(t, key))
	t.RawSet(key, val)
	L.SetTop(1)
	return 1
}

// baseSetmetatable is Lua 5.1's setmetatable: tables only (gopher-lua would also set the
// metatable of every number or string), and protected metatables stay.
func (v *vm) baseSetmetatable(L *lua.LState) int {
	t := L.CheckTable(1)
	mt := L.Get(2)
	if mt != lua.LNil {
		if _, ok := mt.(*lua.LTable); !ok {
			L.ArgError(2, "nil or table expected")
		}
	}
	if cur, ok := t.Metatable.(*lua.LTable); ok && cur.RawGetString("__metatable") != lua.LNil {
		L.RaiseError("cannot change a protected metatable")
	}
	t.Metatable = mt
	L.SetTop(1)
	return 1
}

// baseUnpack is unpack with the registry bound checked before anything is pushed.
func (v *vm) baseUnpack(L *lua.LState) int {
	t := L.CheckTable(1)
	i := argInt(L, 2, 1)
	j := argInt(L, 3, int64(t.Len()))
	if i > j {
		return 0
	}
	if j-i < 0 || j-i >= int64(v.limits.Registry) { // j-i < 0: it overflowed
		v.reserve(int64(v.limits.Registry) + 1)
	}
	v.reserve(j - i + 1)
	for k := i; k <= j; k++ {
		L.Push(t.RawGetInt(int(k)))
	}
	return int(j - i + 1)
}

// reserve trips the registry bound if n more values do not fit on the value stack.
func (v *vm) reserve(n int64) {
	values, _ := v.L.ValueStack()
	if free := int64(v.limits.Registry - len(values)); n > free {
		v.trip(ErrRegistry, fmt.Sprintf("registry limit exceeded: %d values requested, limit %d", n, v.limits.Registry))
		v.raiseIfTripped()
	}
}

// basePrint is print, which goes to the function's log at info level.
func (v *vm) basePrint(L *lua.LState) int {
	v.logAt(slog.LevelInfo)
	return 0
}

// mathRandom is math.random on the VM's own generator: math.randomseed in one function
// must not steer the numbers another one draws.
func (v *vm) mathRandom(L *lua.LState) int {
	r := v.rng.Float64()
	switch L.GetTop() {
	case 0:
		L.Push(lua.LNumber(r))
	case 1:
		m := int64(L.CheckNumber(1))
		if m < 1 {
			L.ArgError(1, "interval is empty")
		}
		L.Push(lua.LNumber(math.Floor(r*float64(m)) + 1))
	case 2:
		lo, hi := int64(L.CheckNumber(1)), int64(L.CheckNumber(2))
		if lo > hi {
			L.ArgError(2, "interval is empty")
		}
		L.Push(lua.LNumber(math.Floor(r*float64(hi-lo+1)) + float64(lo)))
	default:
		L.RaiseError("wrong number of arguments")
	}
	return 1
}

func (v *vm) mathRandomseed(L *lua.LState) int {
	seed := uint64(int64(L.CheckNumber(1)))
	v.pcg.Seed(seed, seed^0x9e3779b97f4a7c15)
	return 0
}
