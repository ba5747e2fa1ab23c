package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// A batch is what the committer stages: the writes of a group, or of one job on top of
// its group, with the outbox heads, cursors and KV usage they change.

// entry is one staged write.
type entry struct {
	key, value []byte
	expiresAt  uint64 // unix seconds, 0 for never
	del        bool
}

// cost estimates what e takes of a transaction, as Badger counts it.
func (e entry) cost() int64 {
	n := int64(len(e.key)) + 2 + 10
	if len(e.value) < valueThreshold {
		return n + int64(len(e.value))
	}
	return n + 12
}

// stagedRec is a record written by a group and not yet in the database.
type stagedRec struct {
	seq  uint64
	ms   int64
	size uint32
	key  []byte
}

// batch holds staged writes and the state they lead to. A job is staged into a
// child batch of the group, so that a failing job can be dropped whole; reads
// look through the chain, then into the store's state and the database. The
// maps are made on first use: most jobs touch one or two keys.
type batch struct {
	s       *Store
	parent  *batch
	ents    []entry
	index   map[string]int // position in ents by key, once ents is long
	heads   map[string]streamHead
	cursors map[cursorID]uint64
	staged  map[string][]stagedRec
	total   int64              // change of pending outbox bytes
	freed   map[string]int64   // record bytes deleted, per stream
	kvDelta map[string]KVUsage // change of each KV namespace's usage
	size    int64              // transaction bytes, as cost counts them
	count   int64
	// appended: records were added; big: a value goes to the value log; durable: a
	// job that is not lazy is in it, so its write is synced before it returns.
	appended, big, durable bool
}

// indexFrom is the length of ents from which a batch indexes them in a map.
const indexFrom = 16

// reset empties b for reuse on top of parent, keeping what it has allocated unless a
// large group (a purge, a backlog trim) grew it: clearing a map costs its capacity.
func (b *batch) reset(parent *batch) *batch {
	const keep = 4096
	ents, index := b.ents, b.index
	if cap(ents) > keep || len(index) > keep {
		ents, index = nil, nil
	}
	clear(ents)
	clear(index)
	clear(b.heads)
	clear(b.cursors)
	clear(b.staged)
	clear(b.freed)
	clear(b.kvDelta)
	*b = batch{s: b.s, parent: parent, ents: ents[:0], index: index, heads: b.heads,
		cursors: b.cursors, staged: b.staged, freed: b.freed, kvDelta: b.kvDelta}
	return b
}

// find returns the position of key's entry in b.ents, or -1.
func (b *batch) find(key []byte) int {
	if b.index != nil {
		if i, ok := b.index[string(key)]; ok {
			return i
		}
		return -1
	}
	for i := range b.ents {
		if bytes.Equal(b.ents[i].key, key) {
			return i
		}
	}
	return -1
}

func (b *batch) put(e entry) {
	if i := b.find(e.key); i >= 0 {
		b.size += e.cost() - b.ents[i].cost()
		b.ents[i] = e
	} else {
		b.ents = append(b.ents, e)
		b.size += e.cost()
		b.count++
		switch {
		case b.index != nil:
			b.index[string(e.key)] = len(b.ents) - 1
		case len(b.ents) > indexFrom:
			b.index = make(map[string]int, 2*len(b.ents))
			for i, e := range b.ents {
				b.index[string(e.key)] = i
			}
		}
	}
	if !e.del && len(e.value) >= valueThreshold {
		b.big = true
	}
}

// merge adds child c's writes and state to b.
func (b *batch) merge(c *batch) {
	for _, e := range c.ents {
		b.put(e)
	}
	for k, v := range c.heads {
		setMap(&b.heads, k, v)
	}
	for k, v := range c.cursors {
		setMap(&b.cursors, k, v)
	}
	for k, v := range c.staged {
		setMap(&b.staged, k, append(b.staged[k], v...))
	}
	for k, v := range c.freed {
		setMap(&b.freed, k, b.freed[k]+v)
	}
	for k, v := range c.kvDelta {
		setMap(&b.kvDelta, k, b.kvDelta[k].add(v))
	}
	b.total += c.total
	b.appended = b.appended || c.appended
	b.big = b.big || c.big
}

// setMap sets m[k] = v, making the map first if needed.
func setMap[K comparable, V any](m *map[K]V, k K, v V) {
	if *m == nil {
		*m = make(map[K]V)
	}
	(*m)[k] = v
}

func (b *batch) stage(j *job) error {
	switch j.kind {
	case jobCommit:
		out, err := b.stageCommit(j.commit)
		j.out = out
		return err
	case jobAppend:
		out, err := b.stageRecords(j.recs)
		j.out = out
		return err
	case jobAck:
		return b.stageAck(j.cur, j.seq)
	case jobPut:
		for _, e := range j.puts {
			b.put(e)
		}
		return nil
	case jobDelete:
		n, err := b.stageDeletePrefix(j.prefix)
		j.n = n
		return err
	case jobMaintain:
		n, err := b.stageMaintain(j.stream)
		j.n = n
		return err
	}
	return fmt.Errorf("job kind %d: %w", j.kind, ErrInvalid)
}

func (b *batch) stageCommit(c Commit) ([]Record, error) {
	if len(c.KV) > 0 {
		if err := checkName("namespace", c.Namespace); err != nil {
			return nil, err
		}
	}
	now := b.s.now()
	before := b.usage(c.Namespace)
	for _, op := range c.KV {
		if err := checkKey(op.Key); err != nil {
			return nil, err
		}
		k := kvKey(c.Namespace, op.Key)
		old, existed, err := b.kvGet(k)
		if err != nil {
			return nil, fmt.Errorf("kv %q: %w", op.Key, err)
		}
		switch op.Kind {
		case OpSet:
			if err := checkValue(op.Value); err != nil {
				return nil, fmt.Errorf("set %q: %w", op.Key, err)
			}
			if !json.Valid(op.Value) {
				return nil, fmt.Errorf("set %q: value is not JSON: %w", op.Key, ErrInvalid)
			}
			if op.TTL < 0 {
				return nil, fmt.Errorf("set %q: negative ttl: %w", op.Key, ErrInvalid)
			}
			b.stageKV(c.Namespace, old, existed, entry{key: k, value: op.Value, expiresAt: expiry(now, op.TTL)})
		case OpDel:
			b.stageKV(c.Namespace, old, existed, entry{key: k, del: true})
		case OpIncr:
			var v []byte
			if existed {
				v = old.value
			}
			n, err := incr(v, op.Delta)
			if err != nil {
				return nil, fmt.Errorf("incr %q: %w", op.Key, err)
			}
			// Like Redis INCR, an incr keeps the key's expiry.
			b.stageKV(c.Namespace, old, existed, entry{key: k, value: n, expiresAt: old.expiresAt})
		default:
			return nil, fmt.Errorf("kv op %d on %q: %w", op.Kind, op.Key, ErrInvalid)
		}
	}
	if len(c.KV) > 0 {
		if err := b.checkQuota(c.Namespace, before); err != nil {
			return nil, err
		}
	}
	return b.stageRecords(c.Records)
}

// stageKV puts e, a KV entry of ns that was old (if existed), and accounts for it.
func (b *batch) stageKV(ns string, old entry, existed bool, e entry) {
	b.account(ns, old, existed, e)
	b.put(e)
}

func expiry(now time.Time, ttl time.Duration) uint64 {
	if ttl <= 0 {
		return 0
	}
	secs := (ttl + time.Second - 1) / time.Second
	return uint64(now.Unix()) + uint64(secs)
}

// incr adds delta to the JSON number cur (nil counts as 0).
func incr(cur []byte, delta float64) ([]byte, error) {
	var v float64
	if cur != nil {
		// Stored values are valid JSON (checked on set), so one that starts
		// like a number is a number.
		if len(cur) == 0 || (cur[0] != '-' && (cur[0] < '0' || cur[0] > '9')) {
			return nil, ErrNotNumber
		}
		f, err := strconv.ParseFloat(string(cur), 64)
		if err != nil {
			return nil, ErrNotNumber
		}
		v = f
	}
	n := v + delta
	if math.IsInf(n, 0) || math.IsNaN(n) {
		return nil, fmt.Errorf("result %v: %w", n, ErrInvalid)
	}
	return formatNumber(n), nil
}

// formatNumber writes integral values as JSON integers, so that counters read
// back as integers in Lua and in JSON.
func formatNumber(f float64) []byte {
	if f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
		return strconv.AppendInt(nil, int64(f), 10)
	}
	return strconv.AppendFloat(nil, f, 'g', -1, 64)
}

// kvGet returns the staged or stored value of KV key k.
func (b *batch) kvGet(k []byte) (entry, bool, error) {
	for x := b; x != nil; x = x.parent {
		if i := x.find(k); i >= 0 {
			e := x.ents[i]
			return e, !e.del, nil
		}
	}
	if r, ok := b.s.recent.get(k); ok {
		return entry{key: k, value: r.value, expiresAt: r.expiresAt}, r.value != nil, nil
	}
	item, err := b.s.readTxn().Get(k)
	if err == badger.ErrKeyNotFound {
		return entry{}, false, nil
	}
	if err != nil {
		return entry{}, false, err
	}
	v, err := valueCopy(item)
	return entry{key: k, value: v, expiresAt: item.ExpiresAt()}, err == nil, err
}

func (b *batch) head(stream string) (streamHead, bool) {
	for x := b; x != nil; x = x.parent {
		if h, ok := x.heads[stream]; ok {
			return h, true
		}
	}
	// The committer is the only writer of s.heads: it may read without the lock.
	h, ok := b.s.heads[stream]
	return h, ok
}

func (b *batch) setHead(stream string, h streamHead) {
	setMap(&b.heads, stream, h)
	b.put(entry{key: headKey(stream), value: h.encode()})
}

func (b *batch) cursor(id cursorID) uint64 {
	for x := b; x != nil; x = x.parent {
		if seq, ok := x.cursors[id]; ok {
			return seq
		}
	}
	return b.s.cursors[id]
}

// pendingTotal returns the pending outbox bytes with b's changes.
func (b *batch) pendingTotal() int64 {
	t := b.s.total
	for x := b; x != nil; x = x.parent {
		t += x.total
	}
	return t
}

// streams returns every stream known to the store or staged in b's chain.
func (b *batch) streams() []string {
	seen := make(map[string]bool)
	var names []string
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	for name := range b.s.heads {
		add(name)
	}
	for x := b; x != nil; x = x.parent {
		for name := range x.heads {
			add(name)
		}
	}
	return names
}

// stagedFor returns the records of stream staged in b's chain, in seq order.
func (b *batch) stagedFor(stream string) []stagedRec {
	var chain []*batch
	for x := b; x != nil; x = x.parent {
		chain = append(chain, x)
	}
	var out []stagedRec
	for i := len(chain) - 1; i >= 0; i-- {
		out = append(out, chain[i].staged[stream]...)
	}
	return out
}

func (b *batch) stageDeletePrefix(prefix []byte) (int, error) {
	it := b.s.readTxn().NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	n := 0
	for it.Rewind(); it.Valid() && n < deleteLimit; it.Next() {
		item := it.Item()
		k := item.KeyCopy(nil)
		if k[0] == tagKV { // a purge: the namespace's usage goes with its keys
			if i := bytes.IndexByte(k[1:], 0); i >= 0 {
				setMap(&b.kvDelta, string(k[1:1+i]), b.kvDelta[string(k[1:1+i])].add(KVUsage{-1, -(int64(len(k)) + item.ValueSize())}))
			}
		}
		b.put(entry{key: k, del: true})
		n++
	}
	return n, scanErr(it)
}
