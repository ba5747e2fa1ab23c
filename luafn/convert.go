package luafn

import (
	"fmt"
	"math"
	"slices"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// eventTable builds the Lua event for ev (SPEC §4), charging it to the memory bound.
func (v *vm) eventTable(ev *Event) *lua.LTable {
	L := v.L
	n := 3
	if ev.Topic != "" || ev.Payload != nil {
		n += 4
	}
	if ev.Pin != "" {
		n += 4
	}
	if ev.Sensor != "" {
		n += 2
	}
	v.charge(sizeTable + int64(n)*(sizeStrEntry+sizeKeyEntry) + int64(len(ev.ID)+len(ev.Topic)+2*len(ev.Payload)))
	t := L.CreateTable(0, n)
	t.RawSetString("id", lua.LString(ev.ID))
	t.RawSetString("source", lua.LString(ev.Source))
	t.RawSetString("ts", lua.LNumber(ev.TS))
	if ev.Topic != "" || ev.Payload != nil {
		raw := lua.LString(ev.Payload)
		t.RawSetString("topic", lua.LString(ev.Topic))
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
		vals := L.CreateTable(0, len(ev.Values))
		for k, x := range ev.Values {
			vals.RawSetString(k, lua.LNumber(x))
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

// toGo converts what handle returned to JSON-able Go values, with the rules of json.go.
func toGo(x lua.LValue) (any, error) {
	c := goConverter{}
	return c.value(x, 0)
}

type goConverter struct {
	path []*lua.LTable
}

func (c *goConverter) value(x lua.LValue, depth int) (any, error) {
	switch x := x.(type) {
	case *lua.LNilType:
		return nil, nil
	case lua.LBool:
		return bool(x), nil
	case lua.LString:
		return string(x), nil
	case lua.LNumber:
		f := float64(x)
		if _, err := appendNumber(nil, f); err != nil {
			return nil, err
		}
		if f == math.Trunc(f) && math.Abs(f) <= maxSafeInt {
			return int64(f), nil
		}
		return f, nil
	case *lua.LTable:
		return c.table(x, depth+1)
	}
	return nil, fmt.Errorf("cannot convert a %s to JSON", x.Type())
}

func (c *goConverter) table(t *lua.LTable, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("cannot convert to JSON: nested deeper than %d", maxDepth)
	}
	if slices.Contains(c.path, t) {
		return nil, fmt.Errorf("cannot convert to JSON: %w", errCycle)
	}
	c.path = append(c.path, t)
	defer func() { c.path = c.path[:len(c.path)-1] }()
	if n, ok := tableShape(t); ok {
		out := make([]any, n)
		for i := range out {
			x, err := c.value(t.RawGetInt(i+1), depth)
			if err != nil {
				return nil, err
			}
			out[i] = x
		}
		return out, nil
	}
	out := make(map[string]any)
	var err error
	t.ForEach(func(k, val lua.LValue) {
		if err != nil {
			return
		}
		var ks string
		if ks, err = objectKey(k); err != nil {
			err = fmt.Errorf("cannot convert to JSON: %w", err)
			return
		}
		out[ks], err = c.value(val, depth)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
