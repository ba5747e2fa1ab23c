package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/dgraph-io/badger/v4"
)

// CheckReport is what Check read.
type CheckReport struct {
	Tables     int   // table files verified against their checksums
	TableBytes int64 // their size
	Keys       int   // keys read, each with its value
	Streams    int   // outbox streams whose index was checked
	Records    int64 // outbox records those indexes cover
	// Problems lists every damage found; Check returns ErrDamaged when it is not empty.
	Problems []string
}

// Check verifies a stopped gateway's store: every table against its checksums, every
// key's value (values in the value log carry a checksum too), each outbox stream's
// records against its index (seqs First..Last, none missing, bytes as counted), and the
// logs the open replays. It opens the store as the gateway does, so it replays the
// logs: a loss found there is reported now and its copy stays in dir/damaged, which
// Check keeps reporting until it is moved away. It returns an error wrapping
// ErrDamaged when it found damage.
func Check(opts Options) (CheckReport, error) {
	var rep CheckReport
	if opts.Dir == "" {
		return rep, fmt.Errorf("check store: no directory: %w", ErrInvalid)
	}
	if _, err := os.Stat(opts.Dir); err != nil {
		return rep, fmt.Errorf("check store: %w", err)
	}
	s, err := Open(opts)
	if err != nil {
		return rep, fmt.Errorf("check: %w", err)
	}
	defer s.Close()
	rep.Tables, rep.TableBytes = s.tables.Tables, s.tables.Bytes
	for _, l := range s.losses {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s: the replay dropped %d bytes after offset %d (copy: %s)", l.File, l.Bytes, l.Offset, l.Copy))
	}
	kept, _ := filepath.Glob(filepath.Join(opts.Dir, "damaged", "*"))
	for _, k := range kept {
		if !containsCopy(s.losses, k) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: a log an earlier open found damaged (move it away once dealt with)", k))
		}
	}
	if err := s.view(func(txn *badger.Txn) error { return checkKeys(txn, &rep) }); err != nil {
		return rep, fmt.Errorf("check store %s: %w", opts.Dir, err)
	}
	if err := s.checkOutbox(&rep); err != nil {
		return rep, fmt.Errorf("check store %s: %w", opts.Dir, err)
	}
	if len(rep.Problems) > 0 {
		return rep, fmt.Errorf("check store %s: %w: %d problems", opts.Dir, ErrDamaged, len(rep.Problems))
	}
	return rep, nil
}

func containsCopy(losses []LogLoss, path string) bool {
	for _, l := range losses {
		if l.Copy == path {
			return true
		}
	}
	return false
}

// checkKeys reads every key's value.
func checkKeys(txn *badger.Txn, rep *CheckReport) error {
	it := txn.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		rep.Keys++
		if err := valueOf(item, func([]byte) error { return nil }); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("key %q: its value cannot be read: %v", item.Key(), err))
		}
	}
	if err := it.Err(); err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the key scan stopped at an unreadable table block: %v", err))
	}
	return nil
}

// checkOutbox compares each stream's records with its head.
func (s *Store) checkOutbox(rep *CheckReport) error {
	s.mu.RLock()
	heads := make(map[string]streamHead, len(s.heads))
	for name, h := range s.heads {
		heads[name] = h
	}
	s.mu.RUnlock()
	names := make([]string, 0, len(heads))
	for name := range heads {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		h := heads[name]
		rep.Streams++
		rep.Records += h.pending()
		err := s.view(func(txn *badger.Txn) error {
			prefix := recPrefix(name)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			next, bytes := h.First, int64(0)
			for it.Rewind(); it.Valid(); it.Next() {
				item := it.Item()
				seq, _, size, ok := parseRecKey(item.Key(), len(prefix))
				if !ok {
					rep.Problems = append(rep.Problems, fmt.Sprintf("stream %s: malformed record key %q", name, item.Key()))
					continue
				}
				if seq != next {
					rep.Problems = append(rep.Problems, fmt.Sprintf("stream %s: record %d where the index expects %d", name, seq, next))
				}
				next = seq + 1
				bytes += int64(size)
				err := valueOf(item, func(v []byte) error {
					r := Record{Stream: name, Seq: seq}
					return decodeRecord(v, &r)
				})
				if err != nil {
					rep.Problems = append(rep.Problems, fmt.Sprintf("stream %s: record %d cannot be read: %v", name, seq, err))
				}
			}
			if h.pending() > 0 && next != h.Last+1 {
				rep.Problems = append(rep.Problems, fmt.Sprintf("stream %s: records end at %d, the index at %d", name, next-1, h.Last))
			}
			if bytes != h.Bytes {
				rep.Problems = append(rep.Problems, fmt.Sprintf("stream %s: records hold %d bytes, the index counts %d", name, bytes, h.Bytes))
			}
			return nil
		})
		if err != nil && !errors.Is(err, ErrClosed) {
			return err
		}
	}
	return nil
}
