package luafn

import (
	"fmt"
	"math"
	"slices"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// Keys of the event table, in the order eventTable fills them.
var eventKeyNames = [...]string{"id", "source", "ts", "topic", "raw", "qos", "payload", "pin", "level", "edge", "coalesced", "sensor", "values"}

const (
	keyID = iota
	keySource
	keyTS
	keyTopic
	keyRaw
	keyQoS
	keyPayload
	keyPin
	keyLevel
	keyEdge
	keyCoalesced
	keySensor
	keyValues
)

// eventTable builds the Lua event for ev (SPEC §4), charging it to the memory bound.
func (v *vm) eventTable(ev *Event) *lua.LTable {
	L := v.L
	k := &v.eventKeys
	pairs := v.eventPairs[:0]
	v.charge(sizeTable + int64(len(eventKeyNames))*(sizeStrEntry+sizeKeyEntry) + int64(len(ev.ID)+len(ev.Topic)+2*len(ev.Payload)))
	pairs = append(pairs, k[keyID], lua.LString(ev.ID))
	pairs = append(pairs, k[keySource], lua.LString(ev.Source))
	pairs = append(pairs, k[keyTS], lua.LNumber(ev.TS))
	if ev.Topic != "" || ev.Payload != nil {
		raw := lua.LString(ev.Payload)
		pairs = append(pairs, k[keyTopic], lua.LString(ev.Topic))
		pairs = append(pairs, k[keyRaw], raw)
		pairs = append(pairs, k[keyQoS], lua.LNumber(ev.QoS))
		pairs = append(pairs, k[keyPayload], v.payloadValue(raw))
	}
	if ev.Pin != "" {
		pairs = append(pairs, k[keyPin], lua.LString(ev.Pin))
		pairs = append(pairs, k[keyLevel], lua.LNumber(ev.Level))
		pairs = append(pairs, k[keyEdge], lua.LString(ev.Edge))
		pairs = append(pairs, k[keyCoalesced], lua.LNumber(ev.Coalesced))
	}
	if ev.Sensor != "" {
		pairs = append(pairs, k[keySensor], lua.LString(ev.Sensor))
		vals := L.CreateTable(0, len(ev.Values))
		for name, x := range ev.Values {
			vals.RawSetString(name, lua.LNumber(x))
		}
		pairs = append(pairs, k[keyValues], vals)
	}
	t := L.CreateTable(0, 0)
	fillStrTable(t, pairs)
	clear(pairs)
	v.eventPairs = pairs[:0]
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
	var path [8]*lua.LTable
	c := goConverter{path: path[:0]}
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
		if math.IsNaN(f) || math.IsInf(f, 0) {
			_, err := appendNumber(nil, f) // for its error naming the value
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
	x, err := c.convert(t, depth)
	c.path = c.path[:len(c.path)-1]
	return x, err
}

func (c *goConverter) convert(t *lua.LTable, depth int) (any, error) {
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
	tb := tableOf(t)
	out := make(map[string]any, len(tb.strdict)+len(tb.dict)+len(tb.array))
	for k, val := range tb.strdict {
		if err := c.put(out, k, val, depth); err != nil {
			return nil, err
		}
	}
	for i, val := range tb.array {
		if val == lua.LNil {
			continue
		}
		k, _ := objectKey(lua.LNumber(i + 1))
		if err := c.put(out, k, val, depth); err != nil {
			return nil, err
		}
	}
	for k, val := range tb.dict {
		ks, err := objectKey(k)
		if err != nil {
			return nil, fmt.Errorf("cannot convert to JSON: %w", err)
		}
		if err := c.put(out, ks, val, depth); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (c *goConverter) put(out map[string]any, k string, val lua.LValue, depth int) error {
	if val == lua.LNil {
		return nil
	}
	x, err := c.value(val, depth)
	out[k] = x
	return err
}
