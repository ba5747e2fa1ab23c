package store

import (
	"bytes"
	"sync"
	"time"
)

// recentKV holds the committed state of KV keys written lately, so that the reads that
// follow writes do not go to Badger. They follow closely: kv.incr reads its counter
// before the invocation commits, and the committer reads it again while staging. Badger
// finds such a key's newest version in its memtable but, since it cannot know that no
// level holds a newer one, searches every level as well; for a hot counter that was the
// largest single cost of a durable invocation.
//
// Only the committer fills it, after a group's transaction is written, from the
// group's own entries: a reader never stores what it read, which could be older than
// what the committer has just written. It is bounded: past maxRecentKV keys, one key
// leaves for each new one, and values over maxRecentValue are not kept.
type recentKV struct {
	mu sync.RWMutex
	m  map[string]recentValue
}

type recentValue struct {
	value     []byte // nil: the key does not exist
	expiresAt uint64 // unix seconds, 0 for never (Badger's rule)
}

const (
	maxRecentKV    = 4096
	maxRecentValue = 256
)

// get returns key's committed value, and whether the cache knows it.
func (r *recentKV) get(key []byte) (recentValue, bool) {
	r.mu.RLock()
	v, ok := r.m[string(key)]
	r.mu.RUnlock()
	if ok && v.expiresAt != 0 && v.expiresAt <= uint64(time.Now().Unix()) {
		return recentValue{}, true // expired: gone, as Badger would say
	}
	return v, ok
}

// written records what a written group did to KV keys.
func (r *recentKV) written(ents []entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]recentValue)
	}
	for _, e := range ents {
		if len(e.key) == 0 || e.key[0] != tagKV {
			continue
		}
		if !e.del && len(e.value) > maxRecentValue {
			delete(r.m, string(e.key)) // what it held is no longer true
			continue
		}
		if _, ok := r.m[string(e.key)]; !ok && len(r.m) >= maxRecentKV {
			for k := range r.m { // Go's map order makes this a random eviction
				delete(r.m, k)
				break
			}
		}
		v := recentValue{expiresAt: e.expiresAt}
		if !e.del {
			v.value = bytes.Clone(e.value) // a committed set's value is the caller's slice
		}
		r.m[string(e.key)] = v
	}
}
