package store

import (
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/moongate/moongate/internal/logkey"
)

// Maintenance, on the committer goroutine: outbox TTL and trims, KV recounts, space
// reclaim and value-log GC.

// maintain runs the periodic work: value-log GC, then TTL expiry and trimming
// of every stream, a bounded number of deletions per transaction.
func (s *Store) maintain() {
	if s.damage.writesRefused() != nil {
		return // every step writes; the damage is logged and listed already
	}
	s.mu.RLock()
	names := make([]string, 0, len(s.heads))
	for name := range s.heads {
		names = append(names, name)
	}
	s.mu.RUnlock()
	for _, name := range names {
		for {
			j := &job{kind: jobMaintain, stream: name, done: make(chan struct{})}
			s.runGroup([]*job{j})
			if j.err != nil {
				s.log.Warn("store: outbox maintenance", logkey.Stream, name, logkey.Err, j.err)
				break
			}
			if j.n < deleteLimit {
				break
			}
		}
	}
	if s.kvExpiring {
		s.recountKV()
	}
	s.reclaim()
	s.gcValueLog()
}

// recountKV counts the KV usage again, forgetting the keys that expired.
func (s *Store) recountKV() {
	err := s.view(func(txn *badger.Txn) error {
		usage, expiring := s.countKV(txn)
		s.mu.Lock()
		s.kvUsage, s.kvExpiring = usage, expiring
		s.mu.Unlock()
		return nil
	})
	if err != nil {
		s.log.Warn("store: recount kv usage", logkey.Err, err)
	}
}

// reclaimMin is how many record bytes drained streams must have freed before
// reclaim compacts the database: one value-log file.
const reclaimMin = valueLogFileSize

// reclaim gives back the disk space of drained streams. Deleted records stay
// in the tables, and their values in the value log, until a compaction merges
// the deletions with them, which on an idle gateway may be never. Value-log GC
// can only delete a file once compactions have counted its values as
// discarded. So once drained streams have freed reclaimMin bytes, reclaim
// flushes the memtable (DropPrefix of a one-key prefix does only that) and
// merges every level (Flatten), counting the discarded values; the value-log
// GC that follows deletes the files. DropPrefix of the stream itself would be
// cheaper for the tables but drops whole tables without counting the values
// they point to, and those value-log files would never be collected.
func (s *Store) reclaim() {
	var freed int64
	for name, n := range s.freed {
		if s.heads[name].pending() == 0 {
			freed += n
		}
	}
	if freed < reclaimMin {
		return
	}
	start := time.Now()
	// DropPrefix acts only on a prefix that has a key: write one.
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte{tagNone}, nil) })
	if err == nil {
		err = s.db.DropPrefix([]byte{tagNone})
	}
	if err == nil {
		err = s.db.Flatten(1)
	}
	if err != nil {
		s.log.Warn("store: reclaim", logkey.Err, err)
		return
	}
	for name := range s.freed {
		if s.heads[name].pending() == 0 {
			delete(s.freed, name)
		}
	}
	s.log.Debug("store: reclaimed drained streams", "bytes", freed, "took", time.Since(start))
}

// gcValueLog rewrites value-log files that are mostly garbage. Badger deletes
// a rewritten file right after moving its live values, which it writes without
// a sync when SyncWrites is off; an open iterator defers that deletion (Badger
// deletes a file only when no iterator is open), so the moved values are synced
// first and a power loss cannot take both copies.
func (s *Store) gcValueLog() {
	if s.checkSpace() != nil {
		return // a rewrite needs room; trimming will make some
	}
	txn := s.db.NewTransaction(false)
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
	rewrote := 0
	for rewrote < 4 {
		if err := s.db.RunValueLogGC(0.5); err != nil {
			s.log.Debug("store: value-log GC", logkey.Err, err)
			break // badger.ErrNoRewrite: nothing worth rewriting
		}
		rewrote++
	}
	if rewrote > 0 {
		// The moved values before the WAL entries that point at them, as in flush.
		err := syncLogFiles(s.opts.Dir, ".vlog", 0)
		if err == nil {
			err = s.db.Sync()
		}
		if err == nil {
			err = syncLogFiles(s.opts.Dir, ".mem", 0)
		}
		if err != nil {
			s.log.Error("store: sync after value-log GC", logkey.Err, err)
		}
		s.log.Debug("store: value-log GC", "files", rewrote)
	}
	it.Close()
	txn.Discard()
}

func beUint64(v uint64) []byte {
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}
