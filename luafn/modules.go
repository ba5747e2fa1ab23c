package luafn

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"
)

// The host modules of SPEC §4. They only record effects: nothing reaches the outside
// world until the caller commits the invocation's Result.

// Per-invocation caps (the log caps are Limits; the sizes the store refuses are the
// host's StoreLimits). Effects and logs live outside the VM, so the memory walk does not
// see them; they are charged through invocation.held instead.
const (
	maxKeys        = 1000 // kv.keys returns at most this many
	effectOverhead = 64   // bytes charged per recorded effect besides its data
)

// invocation is the state of one running handle call.
type invocation struct {
	effects Effects
	eventID string
	logs    []LogEntry
	dropped int                 // log lines past Limits.LogLines
	unsent  int                 // log lines kept but not reported live, past Limits.LogRate
	overlay map[string]*kvEntry // this invocation's uncommitted KV writes
	held    int64               // bytes of effects, logs and overlay
}

// kvEntry is the state of one key as this invocation sees it on top of the store.
type kvEntry struct {
	state kvState
	value []byte  // JSON, when state is kvSet
	delta float64 // when state is kvDelta: added to the committed value
}

type kvState uint8

const (
	kvSet kvState = iota
	kvDeleted
	kvDelta
)

// hold charges n bytes kept by the invocation outside the VM.
func (v *vm) hold(n int64) {
	v.inv.held += n
	v.mustCharge(n)
}

// needInvocation raises unless handle is running: effects recorded while the chunk
// loads would belong to no invocation.
func (v *vm) needInvocation(fn string) *invocation {
	if v.inv == nil {
		v.L.RaiseError("%s can only be called while handle runs", fn)
	}
	return v.inv
}

// ---- mqtt

func (v *vm) mqttFuncs() map[string]lua.LGFunction {
	return map[string]lua.LGFunction{"publish": v.mqttPublish}
}

func (v *vm) mqttPublish(L *lua.LState) int {
	inv := v.needInvocation("mqtt.publish")
	topic := L.CheckString(1)
	if topic == "" || len(topic) > 65535 || strings.ContainsAny(topic, "+#\x00") || !utf8.ValidString(topic) {
		L.ArgError(1, "invalid topic: must be non-empty UTF-8 without wildcards")
	}
	if topic[0] == '$' {
		L.ArgError(1, "topics starting with $ are the broker's own ($SYS): a function cannot publish to them")
	}
	var payload []byte
	switch p := L.Get(2).(type) {
	case *lua.LNilType:
	case lua.LString:
		payload = []byte(p)
	default:
		payload = v.mustEncode(p, "mqtt.publish")
	}
	pub := Publish{Topic: topic, Payload: payload}
	if opts, ok := L.Get(3).(*lua.LTable); ok {
		switch q := opts.RawGetString("qos").(type) {
		case *lua.LNilType:
		case lua.LNumber:
			if q != 0 && q != 1 {
				L.ArgError(3, "qos must be 0 or 1")
			}
			pub.QoS = byte(q)
		default:
			L.ArgError(3, "qos must be 0 or 1")
		}
		pub.Retain = lua.LVAsBool(opts.RawGetString("retain"))
	} else if L.Get(3) != lua.LNil {
		L.TypeError(3, lua.LTTable)
	}
	v.hold(int64(len(topic)+len(payload)) + effectOverhead)
	inv.effects.Publishes = append(inv.effects.Publishes, pub)
	return 0
}

// mustEncode encodes x as JSON or raises a Lua error naming fn.
func (v *vm) mustEncode(x lua.LValue, fn string) []byte {
	b, err := v.encodeJSON(x)
	if err != nil {
		v.raiseIfTripped()
		v.L.RaiseError("%s: %v", fn, err)
	}
	return b
}

// ---- cloud

func (v *vm) cloudFuncs() map[string]lua.LGFunction {
	return map[string]lua.LGFunction{"emit": v.cloudEmit}
}

func (v *vm) cloudEmit(L *lua.LState) int {
	inv := v.needInvocation("cloud.emit")
	stream := L.CheckString(1)
	if err := validStream(stream, v.host.Store.StreamBytes); err != nil {
		L.ArgError(1, err.Error())
	}
	data := v.mustEncode(L.CheckAny(2), "cloud.emit")
	if limit := v.host.Store.ValueBytes; limit > 0 && len(data) > limit {
		L.RaiseError("cloud.emit %q: the record is %d bytes of JSON, more than %d", stream, len(data), limit)
	}
	v.hold(int64(len(stream)+len(data)) + effectOverhead)
	inv.effects.Emits = append(inv.effects.Emits, Emit{Stream: stream, Data: data})
	return 0
}

// validStream accepts printable names without spaces or '*'; names starting with '$'
// are the gateway's own streams ($dead).
func validStream(s string, maxBytes int) error {
	if s == "" || (maxBytes > 0 && len(s) > maxBytes) {
		return fmt.Errorf("stream name must be 1 to %d bytes", maxBytes)
	}
	if s[0] == '$' {
		return fmt.Errorf("stream %q: names starting with '$' are reserved", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == '*' || c >= 0x7f {
			return fmt.Errorf("stream %q: only printable ASCII without spaces or '*'", s)
		}
	}
	return nil
}

// ---- gpio

func (v *vm) gpioFuncs() map[string]lua.LGFunction {
	return map[string]lua.LGFunction{"read": v.gpioRead, "write": v.gpioWrite}
}

func (v *vm) gpioRead(L *lua.LState) int {
	pin := L.CheckString(1)
	if v.host.Pins == nil {
		L.RaiseError("gpio.read: no GPIO on this gateway")
	}
	level, err := v.host.Pins.ReadPin(pin)
	v.raiseIfTripped() // the watchdog may have fired while the pin was read
	if err != nil {
		L.RaiseError("gpio.read %s: %v", pin, err)
	}
	L.Push(lua.LNumber(level))
	return 1
}

func (v *vm) gpioWrite(L *lua.LState) int {
	inv := v.needInvocation("gpio.write")
	pin := L.CheckString(1)
	var level int
	switch x := L.Get(2).(type) {
	case lua.LBool:
		if x {
			level = 1
		}
	case lua.LNumber:
		if x != 0 && x != 1 {
			L.ArgError(2, "level must be 0, 1, true or false")
		}
		level = int(x)
	default:
		L.ArgError(2, "level must be 0, 1, true or false")
	}
	if !slices.Contains(v.host.WritablePins, pin) {
		L.RaiseError("gpio.write: pin %s is not writable by this function", pin)
	}
	v.hold(int64(len(pin)) + effectOverhead)
	inv.effects.PinWrites = append(inv.effects.PinWrites, PinWrite{Pin: pin, Level: level})
	return 0
}

// ---- json, time, env, gateway

func (v *vm) jsonFuncs() map[string]lua.LGFunction {
	return map[string]lua.LGFunction{
		"encode": func(L *lua.LState) int {
			b := v.mustEncode(L.CheckAny(1), "json.encode")
			L.Push(lua.LString(b))
			return 1
		},
		"decode": func(L *lua.LState) int {
			val, err := v.decodeJSON(L.CheckString(1))
			if err != nil {
				v.raiseIfTripped()
				L.RaiseError("json.decode: %v", err)
			}
			L.Push(val)
			return 1
		},
	}
}

func (v *vm) timeFuncs() map[string]lua.LGFunction {
	return map[string]lua.LGFunction{
		"now": func(L *lua.LState) int {
			L.Push(lua.LNumber(v.host.now().UnixMilli()))
			return 1
		},
	}
}

func (v *vm) envTable() *lua.LTable {
	env := v.prog.spec.Env
	t := v.L.CreateTable(0, len(env))
	for k, x := range env {
		t.RawSetString(k, lua.LString(x))
	}
	v.skipTable(t)
	return t
}

func (v *vm) gatewayTable() *lua.LTable {
	t := v.L.CreateTable(0, 1)
	t.RawSetString("id", lua.LString(v.host.GatewayID))
	v.skipTable(t)
	return t
}

// ---- kv

func (v *vm) kvFuncs() map[string]lua.LGFunction {
	return map[string]lua.LGFunction{
		"get":  v.kvGet,
		"set":  v.kvSet,
		"del":  v.kvDel,
		"incr": v.kvIncr,
		"keys": v.kvKeys,
	}
}

func (v *vm) checkKey() string {
	key := v.L.CheckString(1)
	if limit := v.host.Store.KeyBytes; key == "" || (limit > 0 && len(key) > limit) {
		v.L.ArgError(1, fmt.Sprintf("key must be 1 to %d bytes", limit))
	}
	return key
}

// committed reads key from the store.
func (v *vm) committed(fn, key string) ([]byte, bool) {
	if v.host.KV == nil {
		v.L.RaiseError("%s: no KV store on this gateway", fn)
	}
	val, ok, err := v.host.KV.KVGet(v.prog.spec.Name, key)
	v.raiseIfTripped()
	if err != nil {
		v.L.RaiseError("%s %q: %v", fn, key, err)
	}
	return val, ok
}

// committedNumber reads key from the store as a number; missing is 0.
func (v *vm) committedNumber(fn, key string) float64 {
	val, ok := v.committed(fn, key)
	if !ok {
		return 0
	}
	return v.asNumber(fn, key, val)
}

func (v *vm) asNumber(fn, key string, val []byte) float64 {
	x, err := v.decodeJSON(string(val))
	n, isNum := x.(lua.LNumber)
	if err != nil || !isNum {
		v.raiseIfTripped()
		v.L.RaiseError("%s %q: value is not a number", fn, key)
	}
	return float64(n)
}

func (v *vm) kvGet(L *lua.LState) int {
	inv := v.needInvocation("kv.get")
	key := v.checkKey()
	var val []byte
	switch e := inv.overlay[key]; {
	case e == nil:
		var ok bool
		if val, ok = v.committed("kv.get", key); !ok {
			L.Push(lua.LNil)
			return 1
		}
	case e.state == kvDeleted:
		L.Push(lua.LNil)
		return 1
	case e.state == kvDelta:
		L.Push(lua.LNumber(v.committedNumber("kv.get", key) + e.delta))
		return 1
	default:
		val = e.value
	}
	x, err := v.decodeJSON(string(val))
	if err != nil {
		v.raiseIfTripped()
		L.RaiseError("kv.get %q: stored value: %v", key, err)
	}
	L.Push(x)
	return 1
}

// entry returns the overlay entry for key, creating it in state.
func (v *vm) entry(inv *invocation, key string, state kvState) *kvEntry {
	if inv.overlay == nil {
		inv.overlay = make(map[string]*kvEntry)
	}
	e := inv.overlay[key]
	if e == nil {
		e = &kvEntry{state: state}
		inv.overlay[key] = e
		v.hold(int64(len(key)) + effectOverhead)
	}
	return e
}

func (v *vm) kvSet(L *lua.LState) int {
	inv := v.needInvocation("kv.set")
	key := v.checkKey()
	val := L.CheckAny(2)
	if val == lua.LNil {
		return v.kvDel(L)
	}
	var ttl time.Duration
	if L.Get(3) != lua.LNil {
		secs := float64(L.CheckNumber(3))
		if !(secs > 0) || secs > 100*365*24*3600 {
			L.ArgError(3, "ttl must be a positive number of seconds")
		}
		ttl = time.Duration(secs * float64(time.Second))
	}
	data := v.mustEncode(val, "kv.set")
	if limit := v.host.Store.ValueBytes; limit > 0 && len(data) > limit {
		L.RaiseError("kv.set %q: value is %d bytes of JSON, more than %d", key, len(data), limit)
	}
	v.hold(int64(len(key)+2*len(data)) + effectOverhead)
	inv.effects.KV = append(inv.effects.KV, KVOp{Op: KVSet, Key: key, Value: data, TTL: ttl})
	e := v.entry(inv, key, kvSet)
	e.state, e.value, e.delta = kvSet, data, 0
	return 0
}

func (v *vm) kvDel(L *lua.LState) int {
	inv := v.needInvocation("kv.del")
	key := v.checkKey()
	v.hold(int64(len(key)) + effectOverhead)
	inv.effects.KV = append(inv.effects.KV, KVOp{Op: KVDel, Key: key})
	e := v.entry(inv, key, kvDeleted)
	e.state, e.value, e.delta = kvDeleted, nil, 0
	return 0
}

// kvIncr records a delta, which the store applies atomically at commit, and returns the
// value this invocation now sees: the committed value plus its own writes.
func (v *vm) kvIncr(L *lua.LState) int {
	inv := v.needInvocation("kv.incr")
	key := v.checkKey()
	delta := 1.0
	if L.Get(2) != lua.LNil {
		delta = float64(L.CheckNumber(2))
	}
	if math.IsNaN(delta) || math.IsInf(delta, 0) {
		L.ArgError(2, "increment must be a finite number")
	}
	var now float64
	e := inv.overlay[key]
	switch {
	case e == nil || e.state == kvDelta:
		now = v.committedNumber("kv.incr", key) + delta
		if e != nil {
			now += e.delta
		}
		e = v.entry(inv, key, kvDelta)
		e.delta += delta
	case e.state == kvDeleted:
		now = delta
		e.state, e.value = kvSet, mustNumberJSON(now)
	default:
		now = v.asNumber("kv.incr", key, e.value) + delta
		e.value = mustNumberJSON(now)
	}
	if math.IsInf(now, 0) {
		L.RaiseError("kv.incr %q: result overflows", key)
	}
	v.hold(int64(len(key)) + effectOverhead)
	inv.effects.KV = append(inv.effects.KV, KVOp{Op: KVIncr, Key: key, Delta: delta})
	L.Push(lua.LNumber(now))
	return 1
}

func mustNumberJSON(x float64) []byte {
	b, _ := appendNumber(nil, x) // x is finite: checked by the caller
	return b
}

// kvKeys returns the keys with a prefix, sorted, merging the invocation's own writes
// over the committed state; at most maxKeys of them.
func (v *vm) kvKeys(L *lua.LState) int {
	inv := v.needInvocation("kv.keys")
	prefix := ""
	if L.Get(1) != lua.LNil {
		prefix = L.CheckString(1)
	}
	if v.host.KV == nil {
		L.RaiseError("kv.keys: no KV store on this gateway")
	}
	deleted := 0
	for k, e := range inv.overlay {
		if e.state == kvDeleted && strings.HasPrefix(k, prefix) {
			deleted++
		}
	}
	keys, err := v.host.KV.KVKeys(v.prog.spec.Name, prefix, maxKeys+deleted)
	v.raiseIfTripped()
	if err != nil {
		L.RaiseError("kv.keys %q: %v", prefix, err)
	}
	set := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		set[k] = struct{}{}
	}
	for k, e := range inv.overlay {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if e.state == kvDeleted {
			delete(set, k)
		} else {
			set[k] = struct{}{}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	if len(out) > maxKeys {
		out = out[:maxKeys]
	}
	size := int64(sizeTable)
	for _, k := range out {
		size += sizeSlot + sizeString + int64(len(k))
	}
	v.mustCharge(size)
	t := L.CreateTable(len(out), 0)
	for _, k := range out {
		t.Append(lua.LString(k))
	}
	L.Push(t)
	return 1
}
