package gateway

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/moongate/moongate/luafn"
)

// effectsDoc is what one invocation did, or, on a dry run, would have done: the invoke
// API's "effects" and "would" (shapes in console/API_SHAPES.md). Every list is present,
// empty when there is nothing in it.
type effectsDoc struct {
	KV        []kvEffect      `json:"kv"`
	Emits     []emitEffect    `json:"emits"`
	Publishes []publishEffect `json:"publishes"`
	GPIO      []gpioEffect    `json:"gpio"`
}

// kvEffect is one write: the value the key holds after it, or deleted.
type kvEffect struct {
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value,omitempty"`
	Deleted bool            `json:"deleted,omitempty"`
}

type emitEffect struct {
	Stream string          `json:"stream"`
	Data   json.RawMessage `json:"data"`
}

type publishEffect struct {
	Topic   string `json:"topic"`
	Payload string `json:"payload"`
	QoS     byte   `json:"qos"`
	Retain  bool   `json:"retain"`
}

type gpioEffect struct {
	Pin   string `json:"pin"`
	Level int    `json:"level"`
}

// describeEffects lists an invocation's effects as it asked for them, before they are
// committed (or, on a dry run, instead). A kv.incr shows the number the key would then
// hold: the committed value, as read now, plus what this invocation added.
func (a *api) describeEffects(v *version, ev *luafn.Event, res *luafn.Result) (*effectsDoc, error) {
	d := noEffects()
	held := map[string]kvEffect{} // key -> what this invocation left there so far
	for _, op := range res.Effects.KV {
		e := kvEffect{Key: op.Key}
		switch op.Op {
		case luafn.KVSet:
			e.Value = op.Value
		case luafn.KVDel:
			e.Deleted = true
		case luafn.KVIncr:
			prev, seen := held[op.Key]
			if !seen {
				b, ok, err := a.store.KVGet(v.name, op.Key)
				if err != nil {
					return nil, fmt.Errorf("read %s/%s: %w", v.name, op.Key, err)
				}
				prev = kvEffect{Value: b, Deleted: !ok}
			}
			var n float64
			if !prev.Deleted && len(prev.Value) > 0 {
				// kv.incr refused a value that is not a number when it ran; should one
				// have been set since, the commit refuses it, and this shows the delta.
				_ = json.Unmarshal(prev.Value, &n)
			}
			e.Value = json.RawMessage(strconv.FormatFloat(n+op.Delta, 'g', -1, 64))
		}
		held[op.Key] = e
		d.KV = append(d.KV, e)
	}
	for _, r := range commitOf(v, res, a.clock.Now()).Records {
		d.Emits = append(d.Emits, emitEffect{Stream: r.Stream, Data: r.Data})
	}
	for _, p := range res.Effects.Publishes {
		d.Publishes = append(d.Publishes, publishEffect{Topic: p.Topic, Payload: string(p.Payload), QoS: p.QoS, Retain: p.Retain})
	}
	for _, w := range res.Effects.PinWrites {
		d.GPIO = append(d.GPIO, gpioEffect{Pin: w.Pin, Level: w.Level})
	}
	return d, nil
}

func noEffects() *effectsDoc {
	return &effectsDoc{KV: []kvEffect{}, Emits: []emitEffect{}, Publishes: []publishEffect{}, GPIO: []gpioEffect{}}
}
