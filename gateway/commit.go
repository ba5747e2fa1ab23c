package gateway

import (
	"time"

	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/sync/store"
)

// commitOf translates one invocation's durable effects from luafn's vocabulary to the
// store's (the leaves do not know each other), once: a retry commits the same value, so a
// record keeps the time of its first attempt.
func commitOf(v *version, res *luafn.Result, now time.Time) store.Commit {
	c := store.Commit{Namespace: v.name}
	for _, op := range res.Effects.KV {
		c.KV = append(c.KV, store.KVOp{Kind: kvKind(op.Op), Key: op.Key, Value: op.Value, TTL: op.TTL, Delta: op.Delta})
	}
	ts := now.UnixMilli()
	for _, e := range res.Effects.Emits {
		c.Records = append(c.Records, store.Append{Stream: e.Stream, Function: v.name, Data: e.Data, TS: ts})
	}
	// emit: a returned value goes to the function's stream (SPEC §3).
	if v.emit != "" && res.Value != nil {
		c.Records = append(c.Records, store.Append{Stream: v.emit, Function: v.name, Data: res.Value, TS: ts})
	}
	return c
}

func emptyCommit(c store.Commit) bool { return len(c.KV) == 0 && len(c.Records) == 0 }

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
