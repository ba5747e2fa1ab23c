package store

import (
	"fmt"
	"math"

	"github.com/dgraph-io/badger/v4"
	"github.com/oklog/ulid/v2"
)

// Staging outbox records: appends with their quotas, acks and trims.

func (b *batch) stageRecords(recs []Append) ([]Record, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	ms := b.s.now().UnixMilli()
	out := make([]Record, 0, len(recs))
	var added int64
	from := map[string]uint64{}   // per stream: the first seq this call appends
	addedTo := map[string]int64{} // per stream: the bytes it appends
	for _, a := range recs {
		if err := checkAppend(a); err != nil {
			return nil, err
		}
		h, ok := b.head(a.Stream)
		if !ok {
			h = newHead()
		}
		seq := h.Last + 1
		if _, ok := from[a.Stream]; !ok {
			from[a.Stream] = seq
		}
		id, err := ulid.New(uint64(ms), b.s.entropy)
		if err != nil {
			// The monotonic entropy overflowed within this millisecond.
			id = ulid.Make()
		}
		val := encodeRecord(id, a)
		size := uint32(len(recPrefix(a.Stream)) + 20 + len(val))
		key := recKey(a.Stream, seq, ms, size)
		if h.pending() == 0 {
			h.First, h.FirstMs = seq, ms
		}
		h.Last = seq
		h.Bytes += int64(size)
		b.setHead(a.Stream, h)
		b.put(entry{key: key, value: val})
		setMap(&b.staged, a.Stream, append(b.staged[a.Stream], stagedRec{seq: seq, ms: ms, size: size, key: key}))
		b.total += int64(size)
		added += int64(size)
		addedTo[a.Stream] += int64(size)
		b.appended = true
		out = append(out, Record{ID: id.String(), Stream: a.Stream, Seq: seq, TS: a.TS, Function: a.Function, Data: a.Data})
	}
	if cap := b.s.opts.MaxStreamBytes; cap > 0 {
		for stream, n := range addedTo {
			h, _ := b.head(stream)
			if h.Bytes <= cap {
				continue
			}
			if n > cap || b.s.opts.OnFull == RejectNew {
				b.s.countRejected(recs)
				return nil, fmt.Errorf("stream %s: %d bytes pending with %d new, stream quota %d: %w", stream, h.Bytes-n, n, cap, ErrFull)
			}
			if err := b.shedStream(stream, h.Bytes-cap, from[stream]); err != nil {
				return nil, err
			}
		}
	}
	quota := b.s.opts.MaxOutboxBytes
	total := b.pendingTotal()
	if total <= quota {
		return out, nil
	}
	if added > quota || b.s.opts.OnFull == RejectNew {
		b.s.countRejected(recs)
		return nil, fmt.Errorf("%d bytes pending with %d new, quota %d: %w", total-added, added, quota, ErrFull)
	}
	if err := b.shed(total-quota, from); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) countRejected(recs []Append) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range recs {
		s.rejected[a.Stream]++
	}
}

type dropCause int

const (
	causeTrim dropCause = iota // delivered to every consumer: not a drop
	causeQuota
	causeTTL
)

// shed deletes pending records until need bytes are freed: from the stream that holds the
// most first, its oldest first, so that a noisy stream sheds its own records before a quiet
// one loses any (a junk stream once evicted billing records that were never delivered).
// The records this commit appends (from[stream] on) are not shed.
func (b *batch) shed(need int64, from map[string]uint64) error {
	exhausted := map[string]bool{}
	for need > 0 {
		victim, most, second := "", int64(-1), int64(0)
		for _, name := range b.streams() {
			h, _ := b.head(name)
			if exhausted[name] || h.pending() == 0 {
				continue
			}
			switch {
			case h.Bytes > most || (h.Bytes == most && name < victim):
				second = max(second, most)
				victim, most = name, h.Bytes
			case h.Bytes > second:
				second = h.Bytes
			}
		}
		if victim == "" {
			return fmt.Errorf("nothing left to drop, %d bytes over quota: %w", need, ErrFull)
		}
		first, appending := from[victim]
		var freed int64
		n, err := b.deleteFront(victim, causeQuota, func(seq uint64, _ int64, size uint32) bool {
			if appending && seq >= first || freed >= need || freed > 0 && most-freed < second {
				return true // this commit's own, enough, or no longer the largest
			}
			freed += int64(size)
			return false
		})
		if err != nil {
			return err
		}
		if n == 0 {
			exhausted[victim] = true
			continue
		}
		need -= freed
	}
	return nil
}

// shedStream deletes stream's oldest records, before seq before, until need bytes are freed.
func (b *batch) shedStream(stream string, need int64, before uint64) error {
	for need > 0 {
		var freed int64
		n, err := b.deleteFront(stream, causeQuota, func(seq uint64, _ int64, size uint32) bool {
			if seq >= before || freed >= need {
				return true
			}
			freed += int64(size)
			return false
		})
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("stream %s: nothing left to drop, %d bytes over its quota: %w", stream, need, ErrFull)
		}
		need -= freed
	}
	return nil
}

// deleteFront deletes stream's records from the front, in seq order, until
// stop returns true for the next one or deleteLimit is reached. It returns
// how many it deleted.
func (b *batch) deleteFront(stream string, cause dropCause, stop func(seq uint64, ms int64, size uint32) bool) (int, error) {
	h, ok := b.head(stream)
	if !ok || h.pending() == 0 {
		return 0, nil
	}
	n := 0
	done := false
	visit := func(seq uint64, ms int64, size uint32, key []byte) {
		if n >= deleteLimit || stop(seq, ms, size) {
			h.FirstMs = ms
			done = true
			return
		}
		b.put(entry{key: key, del: true})
		h.First = seq + 1
		h.Bytes -= int64(size)
		b.total -= int64(size)
		setMap(&b.freed, stream, b.freed[stream]+int64(size))
		switch cause {
		case causeQuota:
			h.DroppedQuota++
		case causeTTL:
			h.DroppedTTL++
		}
		n++
	}
	// Records up to the last written group's head are in the database; the
	// rest are staged in this chain.
	dbLast := b.s.heads[stream].Last
	if h.First <= dbLast {
		prefix := recPrefix(stream)
		it := b.s.readTxn().NewIterator(badger.IteratorOptions{Prefix: prefix})
		for it.Seek(recSeekKey(stream, h.First)); it.Valid() && !done; it.Next() {
			key := it.Item().KeyCopy(nil)
			seq, ms, size, ok := parseRecKey(key, len(prefix))
			if !ok || seq > dbLast {
				break
			}
			visit(seq, ms, size, key)
		}
		it.Close()
	}
	if !done {
		for _, r := range b.stagedFor(stream) {
			if r.seq < h.First {
				continue
			}
			if visit(r.seq, r.ms, r.size, r.key); done {
				break
			}
		}
	}
	if h.pending() == 0 {
		h.FirstMs = 0
	}
	if n > 0 {
		b.setHead(stream, h)
	}
	return n, nil
}

func (b *batch) stageAck(id cursorID, seq uint64) error {
	if seq <= b.cursor(id) {
		return nil
	}
	h, ok := b.head(id.stream)
	if !ok || seq > h.Last {
		return fmt.Errorf("seq %d beyond the last of %s (%d): %w", seq, id.stream, h.Last, ErrInvalid)
	}
	setMap(&b.cursors, id, seq)
	b.put(entry{key: cursorKey(id.consumer, id.stream), value: beUint64(seq)})
	_, err := b.trim(id.stream)
	return err
}

// trim deletes the records of stream every registered consumer taking it has
// acknowledged. Streams no consumer takes are kept (until TTL or quota).
func (b *batch) trim(stream string) (int, error) {
	b.s.mu.RLock()
	var consumers []string
	for name, patterns := range b.s.consumers {
		if MatchStream(patterns, stream) {
			consumers = append(consumers, name)
		}
	}
	b.s.mu.RUnlock()
	if len(consumers) == 0 {
		return 0, nil
	}
	upto := uint64(math.MaxUint64)
	for _, c := range consumers {
		upto = min(upto, b.cursor(cursorID{c, stream}))
	}
	if upto == 0 {
		return 0, nil
	}
	return b.deleteFront(stream, causeTrim, func(seq uint64, _ int64, _ uint32) bool { return seq > upto })
}

func (b *batch) stageMaintain(stream string) (int, error) {
	cutoff := b.s.now().Add(-b.s.opts.OutboxTTL).UnixMilli()
	n, err := b.deleteFront(stream, causeTTL, func(_ uint64, ms int64, _ uint32) bool { return ms >= cutoff })
	if err != nil || n >= deleteLimit {
		return n, err
	}
	m, err := b.trim(stream)
	return n + m, err
}
