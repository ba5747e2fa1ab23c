package store

import (
	"bytes"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// A function's KV namespace is bounded (Options.KVQuota): without a bound a function
// writing 120 keys of 900 B per invocation grew the disk by 8 MB/s, and when the disk
// guard tripped every other function's commits stopped too. The committer keeps each
// namespace's usage (keys, and key plus value bytes) as it stages commits, so checking a
// commit against the quota costs no read beyond the one it makes for the old value.

// KVUsage is what a namespace holds.
type KVUsage struct {
	Keys  int64
	Bytes int64 // keys and values
}

func (u KVUsage) add(d KVUsage) KVUsage { return KVUsage{u.Keys + d.Keys, u.Bytes + d.Bytes} }

// KVQuota bounds every namespace; a zero field is no bound.
type KVQuota struct {
	Keys  int64
	Bytes int64
}

// KVUsage returns what namespace ns holds. Keys that expired are counted until the next
// maintenance recounts (a minute at most).
func (s *Store) KVUsage(ns string) KVUsage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kvUsage[ns]
}

// usage is ns's usage as staged in b's chain.
func (b *batch) usage(ns string) KVUsage {
	u := b.s.kvUsage[ns] // the committer is the only writer: it may read without the lock
	for x := b; x != nil; x = x.parent {
		u = u.add(x.kvDelta[ns])
	}
	return u
}

// account records that a KV entry of ns changes from old (ok: it existed) to e.
func (b *batch) account(ns string, old entry, existed bool, e entry) {
	var d KVUsage
	if existed {
		d.Keys--
		d.Bytes -= int64(len(old.key) + len(old.value))
	}
	if !e.del {
		d.Keys++
		d.Bytes += int64(len(e.key) + len(e.value))
	}
	if e.expiresAt > 0 {
		b.s.kvExpiring = true
	}
	setMap(&b.kvDelta, ns, b.kvDelta[ns].add(d))
}

// checkQuota refuses a commit that grows ns past the quota.
func (b *batch) checkQuota(ns string, before KVUsage) error {
	q := b.s.opts.KVQuota
	after := b.usage(ns)
	switch {
	case q.Keys > 0 && after.Keys > q.Keys && after.Keys > before.Keys:
		return fmt.Errorf("kv of %s: %d keys, quota %d: %w", ns, after.Keys, q.Keys, ErrQuota)
	case q.Bytes > 0 && after.Bytes > q.Bytes && after.Bytes > before.Bytes:
		return fmt.Errorf("kv of %s: %d bytes, quota %d: %w", ns, after.Bytes, q.Bytes, ErrQuota)
	}
	return nil
}

// countKV counts every namespace's keys and bytes, keys only (values are not read). It
// runs at open, and in maintenance once keys with an expiry exist: Badger forgets an
// expired key without a word, so only a count sees it go.
func (s *Store) countKV(txn *badger.Txn) (map[string]KVUsage, bool) {
	usage := map[string]KVUsage{}
	expiring := false
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagKV}})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		i := bytes.IndexByte(k[1:], 0)
		if i < 0 {
			continue
		}
		ns := string(k[1 : 1+i])
		u := usage[ns]
		u.Keys++
		u.Bytes += int64(len(k)) + item.ValueSize()
		usage[ns] = u
		expiring = expiring || item.ExpiresAt() > 0
	}
	return usage, expiring
}
