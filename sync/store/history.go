package store

import (
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// A function's versions are kept as its history (PutVersion). The gateway keeps it
// bounded (PruneVersions) and reads it a page at a time, so that neither a deploy nor a
// look at the history reads every version ever stored.

// Version returns version of function name.
func (s *Store) Version(name string, version int) (blob []byte, ok bool, err error) {
	if err := checkName("function", name); err != nil {
		return nil, false, fmt.Errorf("version: %w", err)
	}
	if version < 1 || int64(version) > 1<<31-1 {
		return nil, false, nil
	}
	err = s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(versionKey(name, version))
		if err == badger.ErrKeyNotFound {
			return nil
		}
		if err != nil {
			return err
		}
		blob, err = valueCopy(item)
		ok = err == nil
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("version %s %d: %w", name, version, errClosedBadger(err))
	}
	return blob, ok, nil
}

// LatestVersion returns the highest version of function name stored, 0 if none.
func (s *Store) LatestVersion(name string) (int, error) {
	var latest int
	err := s.newestFirst(name, 0, func(v int, _ *badger.Item) (bool, error) {
		latest = v
		return false, nil
	})
	if err != nil {
		return 0, fmt.Errorf("latest version %s: %w", name, err)
	}
	return latest, nil
}

// VersionPage returns up to limit versions of function name older than before (0: from
// the newest), newest first, and whether older ones remain.
func (s *Store) VersionPage(name string, before, limit int) (blobs [][]byte, more bool, err error) {
	if err := checkName("function", name); err != nil {
		return nil, false, fmt.Errorf("version page: %w", err)
	}
	err = s.newestFirst(name, before, func(_ int, item *badger.Item) (bool, error) {
		if len(blobs) == limit {
			more = true
			return false, nil
		}
		b, err := valueCopy(item)
		if err != nil {
			return false, err
		}
		blobs = append(blobs, b)
		return true, nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("version page %s: %w", name, err)
	}
	return blobs, more, nil
}

// PruneVersions deletes the versions of function name but the newest keep, and returns
// how many it deleted.
func (s *Store) PruneVersions(name string, keep int) (int, error) {
	if err := checkName("function", name); err != nil {
		return 0, fmt.Errorf("prune versions: %w", err)
	}
	var dels []entry
	n := 0
	err := s.newestFirst(name, 0, func(v int, _ *badger.Item) (bool, error) {
		if n++; n > keep {
			dels = append(dels, entry{key: versionKey(name, v), del: true})
		}
		return true, nil
	})
	if err != nil || len(dels) == 0 {
		return 0, err
	}
	if err := s.submit(contextBackground, &job{kind: jobPut, puts: dels}); err != nil {
		return 0, fmt.Errorf("prune versions %s: %w", name, err)
	}
	return len(dels), nil
}

// newestFirst calls fn with the versions of name below before (0: all), newest first,
// until it returns false or an error. Values are read only if fn reads them.
func (s *Store) newestFirst(name string, before int, fn func(version int, item *badger.Item) (bool, error)) error {
	prefix := versionPrefix(name)
	seek := binary.BigEndian.AppendUint32(append([]byte(nil), prefix...), 1<<32-1)
	if before > 0 {
		seek = versionKey(name, before-1)
	}
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
		defer it.Close()
		for it.Seek(seek); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != len(prefix)+4 {
				continue
			}
			if more, err := fn(int(binary.BigEndian.Uint32(k[len(prefix):])), it.Item()); err != nil {
				return err
			} else if !more {
				return scanErr(it)
			}
		}
		return scanErr(it)
	})
	return errClosedBadger(err)
}
