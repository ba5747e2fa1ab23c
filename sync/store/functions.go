package store

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// contextBackground is the context of calls that have none: they wait for the
// committer, which always answers.
var contextBackground = context.Background()

// PutVersion stores blob (opaque to the store) as version of function name.
func (s *Store) PutVersion(name string, version int, blob []byte) error {
	if err := checkName("function", name); err != nil {
		return fmt.Errorf("put version: %w", err)
	}
	if version < 1 || int64(version) > 1<<31-1 {
		return fmt.Errorf("put version %s %d: %w", name, version, ErrInvalid)
	}
	if err := checkValue(blob); err != nil {
		return fmt.Errorf("put version %s %d: %w", name, version, err)
	}
	return s.put(fmt.Sprintf("put version %s %d", name, version), entry{key: versionKey(name, version), value: blob})
}

// Versions returns the blobs of every version of function name, by ascending
// version.
func (s *Store) Versions(name string) ([][]byte, error) {
	if err := checkName("function", name); err != nil {
		return nil, fmt.Errorf("versions: %w", err)
	}
	var out [][]byte
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: versionPrefix(name), PrefetchValues: true, PrefetchSize: 8})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := valueCopy(it.Item())
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return scanErr(it)
	})
	if err != nil {
		return nil, fmt.Errorf("versions %s: %w", name, errClosedBadger(err))
	}
	return out, nil
}

// SetActive records that version of function name is the one running. The
// version must have been stored with PutVersion.
func (s *Store) SetActive(name string, version int) error {
	if err := checkName("function", name); err != nil {
		return fmt.Errorf("set active: %w", err)
	}
	err := s.view(func(txn *badger.Txn) error {
		_, err := txn.Get(versionKey(name, version))
		return err
	})
	if err == badger.ErrKeyNotFound {
		return fmt.Errorf("set active %s %d: %w", name, version, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("set active %s %d: %w", name, version, errClosedBadger(err))
	}
	return s.put(fmt.Sprintf("set active %s %d", name, version),
		entry{key: activeKey(name), value: binary.BigEndian.AppendUint32(nil, uint32(version))})
}

// Active returns the active version of every function.
func (s *Store) Active() (map[string]int, error) {
	out := make(map[string]int)
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagActive}, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			err := valueOf(item, func(v []byte) error {
				if len(v) != 4 {
					return fmt.Errorf("active version of %q: %d bytes", item.Key()[1:], len(v))
				}
				out[string(item.Key()[1:])] = int(binary.BigEndian.Uint32(v))
				return nil
			})
			if err != nil {
				return err
			}
		}
		return scanErr(it)
	})
	if err != nil {
		return nil, fmt.Errorf("active versions: %w", errClosedBadger(err))
	}
	return out, nil
}

// DeleteFunction removes function name's active mark: it no longer runs after a restart.
// Its versions stay, as the history a later deploy of the name continues, and so does its
// KV namespace (PurgeNamespace removes that).
func (s *Store) DeleteFunction(name string) error {
	if err := checkName("function", name); err != nil {
		return fmt.Errorf("delete function: %w", err)
	}
	return s.put("delete function "+name, entry{key: activeKey(name), del: true})
}

// GetMeta returns the value stored under key with PutMeta.
func (s *Store) GetMeta(key string) ([]byte, bool, error) {
	if err := checkKey(key); err != nil {
		return nil, false, fmt.Errorf("get meta: %w", err)
	}
	var v []byte
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey(key))
		if err != nil {
			return err
		}
		v, err = valueCopy(item)
		return err
	})
	if err == badger.ErrKeyNotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("get meta %q: %w", key, errClosedBadger(err))
	}
	return v, true, nil
}

// PutMeta stores v (opaque to the store) under key, durably.
func (s *Store) PutMeta(key string, v []byte) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("put meta: %w", err)
	}
	if err := checkValue(v); err != nil {
		return fmt.Errorf("put meta %q: %w", key, err)
	}
	return s.put("put meta "+key, entry{key: metaKey(key), value: v})
}

func (s *Store) put(what string, e entry) error {
	if err := s.submit(contextBackground, &job{kind: jobPut, puts: []entry{e}}); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
