package luafn

import (
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// eventFields is the most fields an event table has (an MQTT event's), to size it once.
const eventFields = 7

// eventTable builds the Lua event for ev (SPEC §4), charging it to the memory bound.
func (v *vm) eventTable(ev *Event) *lua.LTable {
	v.charge(sizeTable + eventFields*sizeStrEntry + int64(len(ev.ID)+len(ev.Topic)+2*len(ev.Payload)))
	t := v.L.CreateTable(0, eventFields)
	t.RawSetString("id", lua.LString(ev.ID))
	t.RawSetString("source", boxed(&v.source, ev.Source))
	t.RawSetString("ts", lua.LNumber(ev.TS))
	if ev.Topic != "" || ev.Payload != nil {
		raw := lua.LString(ev.Payload)
		t.RawSetString("topic", boxed(&v.topic, ev.Topic))
		t.RawSetString("raw", raw)
		t.RawSetString("qos", lua.LNumber(ev.QoS))
		t.RawSetString("payload", v.payloadValue(raw))
	}
	if ev.Pin != "" {
		t.RawSetString("pin", lua.LString(ev.Pin))
		t.RawSetString("level", lua.LNumber(ev.Level))
		t.RawSetString("edge", lua.LString(ev.Edge))
		t.RawSetString("coalesced", lua.LNumber(ev.Coalesced))
	}
	if ev.Sensor != "" {
		t.RawSetString("sensor", lua.LString(ev.Sensor))
		vals := v.L.CreateTable(0, len(ev.Values))
		for name, x := range ev.Values {
			vals.RawSetString(name, lua.LNumber(x))
		}
		t.RawSetString("values", vals)
	}
	return t
}

// payloadValue is the payload as a table when it is a JSON object or array, else the
// string itself.
func (v *vm) payloadValue(raw lua.LString) lua.LValue {
	s := strings.TrimLeft(string(raw), " \t\r\n")
	if s != "" && (s[0] == '{' || s[0] == '[') {
		if val, err := v.decodeJSON(string(raw)); err == nil {
			return val
		}
	}
	return raw
}

// boxed returns s as a Lua value, reusing *last when it holds the same string: boxing
// allocates, and a VM sees the same source and topic event after event.
func boxed(last *lua.LValue, s string) lua.LValue {
	if l, ok := (*last).(lua.LString); ok && string(l) == s {
		return *last // the interface itself: returning l would box it again
	}
	*last = lua.LString(s)
	return *last
}
