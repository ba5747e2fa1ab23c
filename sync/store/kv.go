package store

import (
	"bytes"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// KV is one key of a namespace with its value.
type KV struct {
	Key       string
	Value     []byte    // JSON; nil when KVList left it out (see Size)
	Size      int       // the value's length in bytes
	ExpiresAt time.Time // zero if the key does not expire
}

// KVGet returns the value of key in namespace ns; ok is false if the key does
// not exist or has expired.
func (s *Store) KVGet(ns, key string) (value []byte, ok bool, err error) {
	if err := checkName("namespace", ns); err != nil {
		return nil, false, fmt.Errorf("kv get: %w", err)
	}
	if err := checkKey(key); err != nil {
		return nil, false, fmt.Errorf("kv get: %w", err)
	}
	k := kvKey(ns, key)
	if r, ok := s.recent.get(k); ok {
		if err := s.checkOpen(); err != nil {
			return nil, false, fmt.Errorf("kv get %s %q: %w", ns, key, err)
		}
		return bytes.Clone(r.value), r.value != nil, nil
	}
	err = s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err == badger.ErrKeyNotFound {
			return nil
		}
		if err != nil {
			return err
		}
		value, err = valueCopy(item)
		ok = err == nil
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("kv get %s %q: %w", ns, key, errClosedBadger(err))
	}
	return value, ok, nil
}

// KVKeys returns up to limit keys of namespace ns starting with prefix, in
// byte order. limit <= 0 means no limit.
func (s *Store) KVKeys(ns, prefix string, limit int) ([]string, error) {
	var keys []string
	err := s.kvScan(ns, prefix, limit, false, func(key string, _ *badger.Item) error {
		keys = append(keys, key)
		return nil
	})
	return keys, err
}

// KVList returns up to limit keys of namespace ns starting with prefix, with
// their values, in byte order. limit <= 0 means no limit. A value longer than
// maxValue, or one that would bring the values returned past maxTotal, is left
// out (Value nil, Size set) without being read: a listing of large values must not
// cost their size in memory. Zero means no bound.
func (s *Store) KVList(ns, prefix string, limit, maxValue, maxTotal int) ([]KV, error) {
	var kvs []KV
	total := 0
	err := s.kvScan(ns, prefix, limit, false, func(key string, item *badger.Item) error {
		kv := KV{Key: key, Size: int(item.ValueSize())}
		if (maxValue <= 0 || kv.Size <= maxValue) && (maxTotal <= 0 || total+kv.Size <= maxTotal) {
			v, err := valueCopy(item)
			if err != nil {
				return err
			}
			kv.Value = v
			total += len(v)
		}
		if exp := item.ExpiresAt(); exp > 0 {
			kv.ExpiresAt = time.Unix(int64(exp), 0)
		}
		kvs = append(kvs, kv)
		return nil
	})
	return kvs, err
}

func (s *Store) kvScan(ns, prefix string, limit int, values bool, fn func(string, *badger.Item) error) error {
	if err := checkName("namespace", ns); err != nil {
		return fmt.Errorf("kv scan: %w", err)
	}
	err := s.view(func(txn *badger.Txn) error {
		nsLen := len(kvPrefix(ns))
		it := txn.NewIterator(badger.IteratorOptions{
			Prefix:         kvKey(ns, prefix),
			PrefetchValues: values,
			PrefetchSize:   16,
		})
		defer it.Close()
		n := 0
		for it.Rewind(); it.Valid(); it.Next() {
			if limit > 0 && n >= limit {
				return scanErr(it)
			}
			item := it.Item()
			if err := fn(string(item.Key()[nsLen:]), item); err != nil {
				return err
			}
			n++
		}
		return scanErr(it)
	})
	if err != nil {
		return fmt.Errorf("kv scan %s %q: %w", ns, prefix, errClosedBadger(err))
	}
	return nil
}

// PurgeNamespace deletes every key of namespace ns. It deletes in transactions
// of a bounded size: a crash part way leaves part of the namespace, and
// calling it again finishes the job.
func (s *Store) PurgeNamespace(ns string) error {
	if err := checkName("namespace", ns); err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	if err := s.deletePrefix(kvPrefix(ns)); err != nil {
		return fmt.Errorf("purge %s: %w", ns, err)
	}
	return nil
}

func (s *Store) deletePrefix(prefix []byte) error {
	for {
		j := &job{kind: jobDelete, prefix: prefix}
		if err := s.submit(contextBackground, j); err != nil {
			return err
		}
		if j.n < deleteLimit {
			return nil
		}
	}
}
