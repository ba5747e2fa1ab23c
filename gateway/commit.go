package gateway

import (
	"time"

	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/sync/store"
)

// appendRec is one record for the outbox.
type appendRec struct {
	stream, function string
	data             []byte
}

// commitSet is one invocation's durable effects, translated from luafn's vocabulary to the
// store's (the leaves do not know each other).
type commitSet struct {
	ns      string
	kv      []store.KVOp
	records []appendRec
	lazy    bool // may be synced later (gateway.durability: batch, an event nobody waits for)
}

func commitOf(v *version, ev *luafn.Event, res *luafn.Result) commitSet {
	c := commitSet{ns: v.name}
	for _, op := range res.Effects.KV {
		c.kv = append(c.kv, store.KVOp{Kind: kvKind(op.Op), Key: op.Key, Value: op.Value, TTL: op.TTL, Delta: op.Delta})
	}
	for _, e := range res.Effects.Emits {
		c.records = append(c.records, appendRec{stream: e.Stream, function: v.name, data: e.Data})
	}
	// emit: a returned value goes to the function's stream (SPEC §3).
	if v.emit != "" && res.Value != nil {
		c.records = append(c.records, appendRec{stream: v.emit, function: v.name, data: res.Value})
	}
	return c
}

func (c commitSet) empty() bool { return len(c.kv) == 0 && len(c.records) == 0 }

func (c commitSet) store() store.Commit {
	sc := store.Commit{Namespace: c.ns, KV: c.kv, Lazy: c.lazy}
	now := time.Now().UnixMilli()
	for _, r := range c.records {
		sc.Records = append(sc.Records, store.Append{Stream: r.stream, Function: r.function, Data: r.data, TS: now})
	}
	return sc
}

func kvKind(op luafn.KVOpKind) store.OpKind {
	switch op {
	case luafn.KVDel:
		return store.OpDel
	case luafn.KVIncr:
		return store.OpIncr
	default:
		return store.OpSet
	}
}
