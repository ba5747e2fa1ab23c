package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/oklog/ulid/v2"
)

// Append is one record to add to the outbox.
type Append struct {
	Stream   string
	Function string // the function that emitted it; may be empty for the gateway's own records
	Data     []byte // JSON
	TS       int64  // event time, unix ms
}

// Record is a record of the outbox.
type Record struct {
	ID       string // ULID: unique across restarts, sortable by append time
	Stream   string
	Seq      uint64 // per stream, from 1, never reused
	TS       int64  // event time, unix ms, as appended
	Function string
	Data     json.RawMessage
}

// streamHead is the persistent state of one stream, written in the same
// transaction as every change to the stream's records. The records of a stream
// are exactly First..Last: records leave only from the front (trim, TTL, quota).
type streamHead struct {
	Last         uint64 // last seq given out
	First        uint64 // first pending seq; First > Last when none is pending
	FirstMs      int64  // append time of record First
	Bytes        int64  // accounted bytes of the pending records
	DroppedQuota uint64
	DroppedTTL   uint64
}

func newHead() streamHead { return streamHead{First: 1} }

func (h streamHead) pending() int64 {
	if h.First > h.Last {
		return 0
	}
	return int64(h.Last - h.First + 1)
}

const headLen = 6 * 8

func (h streamHead) encode() []byte {
	b := make([]byte, 0, headLen)
	for _, v := range []uint64{h.Last, h.First, uint64(h.FirstMs), uint64(h.Bytes), h.DroppedQuota, h.DroppedTTL} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeHead(b []byte) (streamHead, error) {
	if len(b) != headLen {
		return streamHead{}, fmt.Errorf("stream head: %d bytes, want %d", len(b), headLen)
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(b[8*i:]) }
	return streamHead{Last: u(0), First: u(1), FirstMs: int64(u(2)), Bytes: int64(u(3)), DroppedQuota: u(4), DroppedTTL: u(5)}, nil
}

// A record's value: ULID (16 bytes), TS (varint), len(Function) (uvarint),
// Function, Data. Stream and Seq are in the key.
func encodeRecord(id ulid.ULID, a Append) []byte {
	b := make([]byte, 0, 16+binary.MaxVarintLen64+1+len(a.Function)+len(a.Data))
	b = append(b, id[:]...)
	b = binary.AppendVarint(b, a.TS)
	b = binary.AppendUvarint(b, uint64(len(a.Function)))
	b = append(b, a.Function...)
	return append(b, a.Data...)
}

func decodeRecord(v []byte, r *Record) error {
	if len(v) < 16 {
		return fmt.Errorf("record %s/%d: %d bytes", r.Stream, r.Seq, len(v))
	}
	var id ulid.ULID
	copy(id[:], v)
	r.ID = id.String()
	v = v[16:]
	ts, n := binary.Varint(v)
	if n <= 0 {
		return fmt.Errorf("record %s/%d: bad ts", r.Stream, r.Seq)
	}
	r.TS = ts
	v = v[n:]
	fl, n := binary.Uvarint(v)
	if n <= 0 || uint64(len(v)-n) < fl {
		return fmt.Errorf("record %s/%d: bad function", r.Stream, r.Seq)
	}
	r.Function = string(v[n : n+int(fl)])
	r.Data = append(json.RawMessage(nil), v[n+int(fl):]...)
	return nil
}

func checkAppend(a Append) error {
	if err := checkName("stream", a.Stream); err != nil {
		return err
	}
	if len(a.Function) > MaxNameLen {
		return fmt.Errorf("function name longer than %d bytes: %w", MaxNameLen, ErrTooLarge)
	}
	if err := checkValue(a.Data); err != nil {
		return fmt.Errorf("record for %s: %w", a.Stream, err)
	}
	if !json.Valid(a.Data) {
		return fmt.Errorf("record for %s: data is not JSON: %w", a.Stream, ErrInvalid)
	}
	return nil
}

// Append adds records to the outbox, outside any invocation (the gateway's own
// records, such as $dead entries). The records are durable when Append returns
// nil, with the same guarantees and limits as Commit.
func (s *Store) Append(ctx context.Context, recs ...Append) ([]Record, error) {
	j := &job{kind: jobAppend, recs: recs}
	if err := s.submit(ctx, j); err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	return j.out, nil
}

// Read returns up to maxRecords records of stream with seq > afterSeq, in seq
// order, stopping before maxBytes (accounted bytes) would be passed; it returns
// at least one record when any is pending. maxRecords or maxBytes <= 0 means no
// limit. Records dropped by quota or TTL leave a gap in the seqs.
func (s *Store) Read(stream string, afterSeq uint64, maxRecords, maxBytes int) ([]Record, error) {
	if err := checkName("stream", stream); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	var out []Record
	err := s.view(func(txn *badger.Txn) error {
		prefix := recPrefix(stream)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		var total int
		for it.Seek(recSeekKey(stream, afterSeq+1)); it.Valid(); it.Next() {
			if maxRecords > 0 && len(out) >= maxRecords {
				return scanErr(it)
			}
			item := it.Item()
			seq, _, size, ok := parseRecKey(item.Key(), len(prefix))
			if !ok {
				return fmt.Errorf("bad record key %q", item.Key())
			}
			if maxBytes > 0 && len(out) > 0 && total+int(size) > maxBytes {
				return scanErr(it)
			}
			total += int(size)
			r := Record{Stream: stream, Seq: seq}
			if err := valueOf(item, func(v []byte) error { return decodeRecord(v, &r) }); err != nil {
				return err
			}
			out = append(out, r)
		}
		return scanErr(it)
	})
	if err != nil {
		return nil, fmt.Errorf("read %s after %d: %w", stream, afterSeq, errClosedBadger(err))
	}
	return out, nil
}

// RegisterConsumer declares a consumer (a sink) and the streams it takes:
// "*" is every stream whose name does not start with "$", any other pattern is
// an exact stream name. Records are trimmed once every registered consumer that
// takes their stream has acknowledged them; register all consumers before the
// first Ack. Registering again replaces the patterns.
func (s *Store) RegisterConsumer(name string, patterns []string) error {
	if err := checkName("consumer", name); err != nil {
		return fmt.Errorf("register consumer: %w", err)
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	s.mu.Lock()
	s.consumers[name] = append([]string(nil), patterns...)
	s.mu.Unlock()
	return nil
}

// MatchStream reports whether a consumer with patterns takes stream: a pattern is a
// stream name, or "*" for every stream whose name does not start with "$".
func MatchStream(patterns []string, stream string) bool {
	for _, p := range patterns {
		if p == stream || (p == "*" && !strings.HasPrefix(stream, "$")) {
			return true
		}
	}
	return false
}

// Cursor returns the last seq consumer acknowledged in stream, 0 if none.
func (s *Store) Cursor(consumer, stream string) (uint64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cursors[cursorID{consumer, stream}], nil
}

// Ack records durably that consumer has delivered stream up to seq, and trims
// the records every consumer of the stream has delivered. Cursors only move
// forward: an Ack at or below the cursor does nothing.
func (s *Store) Ack(consumer, stream string, seq uint64) error {
	if err := checkName("consumer", consumer); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	if err := checkName("stream", stream); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	j := &job{kind: jobAck, cur: cursorID{consumer, stream}, seq: seq}
	if err := s.submit(context.Background(), j); err != nil {
		return fmt.Errorf("ack %s %s %d: %w", consumer, stream, seq, err)
	}
	return nil
}

// splitName splits "a\x00b" into a and b.
func splitName(k []byte) (string, string, bool) {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return "", "", false
	}
	return string(k[:i]), string(k[i+1:]), true
}

// maxLogFid returns the highest id among dir's files named NNNNNN+ext.
func maxLogFid(dir, ext string) (uint32, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var max uint32
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ext)
		if !ok {
			continue
		}
		if id, err := strconv.ParseUint(name, 10, 32); err == nil && uint32(id) > max {
			max = uint32(id)
		}
	}
	return max, nil
}

// syncLogFiles fsyncs dir's files ending in ext whose id is at least from.
// Badger does not sync a memtable WAL or value-log file it rotates away from
// when SyncWrites is off; fsync through a second descriptor flushes the pages
// written through Badger's mapping, since Linux tracks them per file.
func syncLogFiles(dir, ext string, from uint32) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ext)
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(name, 10, 32)
		if err != nil || uint32(id) < from {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			if os.IsNotExist(err) {
				continue // deleted after a flush or GC: its contents are in a table
			}
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", e.Name(), err)
		}
	}
	return nil
}
