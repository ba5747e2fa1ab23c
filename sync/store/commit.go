package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/oklog/ulid/v2"
)

// OpKind is the kind of a KV operation.
type OpKind int

const (
	OpSet  OpKind = iota + 1 // set Key to Value (JSON), expiring after TTL if > 0
	OpDel                    // delete Key
	OpIncr                   // add Delta to the number at Key (a missing key counts as 0)
)

// KVOp is one KV operation of a commit.
type KVOp struct {
	Kind  OpKind
	Key   string
	Value []byte        // OpSet: JSON
	TTL   time.Duration // OpSet: 0 for no expiry; rounded up to whole seconds
	Delta float64       // OpIncr
}

// Commit is one invocation's effects on the store.
type Commit struct {
	Namespace string   // the function's KV namespace (its name)
	KV        []KVOp   // applied in order
	Records   []Append // appended to the outbox in order
	// Lazy lets Commit return once the commit is written, before it is synced: it is
	// synced with the next commit that is not lazy, or Options.BatchInterval later at
	// the latest. Until then a power loss (not a crash of the process: the kernel has
	// the pages) can take it, never a commit synced before it. For events nobody waits
	// for (QoS 0 telemetry).
	Lazy bool
}

// Commit applies c atomically and durably: when it returns nil, every KV
// operation and record of c is in the store and on disk; when it returns an
// error, none of them is.
//
// Durability: a commit is in Badger's write-ahead log and that log has been
// fsynced before Commit returns. Concurrent calls are grouped by one goroutine
// into one Badger transaction and one fsync (group commit): a commit waits at
// most for the group being written before its own. A commit that fails (an
// incr on a value that is not a number, ErrFull, an invalid argument) is left
// out of its group and does not fail the others. A commit is never split across
// transactions; a group that would exceed Badger's transaction size is written
// and synced in several pieces, in order. One commit must fit in a transaction
// (about 140 KiB of keys and values under 1 KiB, larger values counting 12
// bytes, and about 1400 writes), else it fails with ErrTooLarge. See
// DURABILITY.md for the failure cases (kill -9, power loss, full disk).
//
// ctx bounds the wait for the committer to accept c; once accepted, Commit
// waits for the outcome, so that the caller always knows it. The store does not
// keep c's slices after Commit returns.
func (s *Store) Commit(ctx context.Context, c Commit) error {
	if len(c.KV) == 0 && len(c.Records) == 0 {
		return nil
	}
	j := &job{kind: jobCommit, commit: c, lazy: c.Lazy && s.opts.BatchInterval > 0}
	if err := s.submit(ctx, j); err != nil {
		return fmt.Errorf("commit %s: %w", c.Namespace, err)
	}
	return nil
}

type jobKind uint8

const (
	jobCommit   jobKind = iota // an invocation's effects
	jobAppend                  // records only
	jobAck                     // move a cursor, trim
	jobPut                     // opaque sets and deletes (versions, meta)
	jobDelete                  // delete up to deleteLimit keys under a prefix
	jobMaintain                // TTL expiry and trimming of one stream
)

// A job is one request to the committer. The committer sets the results and
// closes done.
type job struct {
	kind   jobKind
	commit Commit
	recs   []Append
	cur    cursorID
	seq    uint64
	puts   []entry
	prefix []byte
	stream string
	lazy   bool // may return before its sync (Commit.Lazy)

	out  []Record
	n    int
	err  error
	done chan struct{}
}

// grows reports whether j can add data; only those are refused on a full disk.
func (j *job) grows() bool {
	return j.kind == jobCommit || j.kind == jobAppend || j.kind == jobPut
}

const (
	maxGroupJobs = 1024 // jobs staged into one group at most
	deleteLimit  = 1000 // deletions one job may stage: keeps it under a transaction
)

// submit hands j to the committer and waits for its outcome.
func (s *Store) submit(ctx context.Context, j *job) error {
	j.done = make(chan struct{})
	s.gate.RLock()
	if s.closed {
		s.gate.RUnlock()
		return ErrClosed
	}
	select {
	case s.jobs <- j:
		s.gate.RUnlock()
	case <-ctx.Done():
		s.gate.RUnlock()
		return ctx.Err()
	}
	<-j.done
	return j.err
}

// run is the committer: the only goroutine that writes to Badger.
func (s *Store) run() {
	defer close(s.done)
	tick := time.NewTicker(s.opts.Maintenance)
	defer tick.Stop()
	batch := make([]*job, 0, maxGroupJobs)
	for {
		var syncDue <-chan time.Time
		if s.syncTimer != nil {
			syncDue = s.syncTimer.C
		}
		select {
		case j := <-s.jobs:
			batch = s.collect(append(batch[:0], j))
			s.runGroup(batch)
		case <-syncDue:
			s.syncTimer = nil
			if err := s.syncLazy(); err != nil {
				s.log.Error("store: sync of lazy commits", "err", err)
			}
		case <-tick.C:
			s.maintain()
		case reply := <-s.maintainNow:
			s.maintain()
			close(reply)
		case <-s.quit:
			for {
				batch = s.collect(batch[:0])
				if len(batch) == 0 {
					break
				}
				s.runGroup(batch)
			}
			if err := s.syncLazy(); err != nil {
				s.log.Error("store: sync of lazy commits", "err", err)
			}
			return
		}
	}
}

// collect adds the jobs already waiting to batch: they form one group.
func (s *Store) collect(batch []*job) []*job {
	for len(batch) < maxGroupJobs {
		select {
		case j := <-s.jobs:
			batch = append(batch, j)
		default:
			return batch
		}
	}
	return batch
}

// runGroup stages every job on top of the ones before it, then writes them in
// one transaction and syncs. A job that fails to stage is left out.
func (s *Store) runGroup(jobs []*job) {
	defer s.resetRead()
	noSpace := s.checkSpace()
	// The group and the job's batch are the committer's own, reused: their maps and
	// slices keep their capacity from one group (and job) to the next, which under load
	// was most of the store's allocation.
	g, c := s.group.reset(nil), &s.job
	var merged []*job
	var failed error // once a write fails, later jobs may depend on it: fail them too
	finish := func(err error) {
		if err == nil {
			s.commits.Add(uint64(len(merged)))
		}
		for _, j := range merged {
			j.err = err
			close(j.done)
		}
		merged = merged[:0]
	}
	for _, j := range jobs {
		if failed == nil && noSpace != nil && j.grows() {
			j.err = noSpace
		}
		if failed != nil {
			j.err = failed
		}
		if j.err != nil {
			close(j.done)
			continue
		}
		c.reset(g)
		if err := c.stage(j); err != nil {
			j.err = err
			close(j.done)
			continue
		}
		if c.size > s.txnSize || c.count > s.txnCount {
			j.err = fmt.Errorf("%d bytes in %d writes, more than one transaction holds: %w", c.size, c.count, ErrTooLarge)
			close(j.done)
			continue
		}
		if g.size+c.size > s.txnSize || g.count+c.count > s.txnCount {
			// c was staged on top of g; once g is written, its view is the
			// database's, so c stays valid on top of a fresh group.
			if failed = s.flush(g); failed != nil {
				finish(failed)
				j.err = failed
				close(j.done)
				continue
			}
			finish(nil)
			g.reset(nil)
		}
		g.merge(c)
		g.durable = g.durable || !j.lazy
		merged = append(merged, j)
	}
	if failed == nil {
		failed = s.flush(g)
	}
	finish(failed)
}

// checkSpace returns an error wrapping ErrNoSpace when the disk is low.
func (s *Store) checkSpace() error {
	if s.opts.MinFreeBytes < 0 {
		return nil
	}
	free, err := freeBytes(s.opts.Dir)
	if err != nil {
		s.log.Warn("store: statfs failed", "dir", s.opts.Dir, "err", err)
		return nil
	}
	if free < s.opts.MinFreeBytes {
		return fmt.Errorf("%d bytes free in %s, below the %d kept free: %w", free, s.opts.Dir, s.opts.MinFreeBytes, ErrNoSpace)
	}
	return nil
}

// flush writes g in one transaction and syncs the logs.
func (s *Store) flush(g *batch) error {
	if len(g.ents) == 0 {
		return nil
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for _, e := range g.ents {
		var err error
		if e.del {
			err = txn.Delete(e.key)
		} else {
			be := badger.NewEntry(e.key, e.value)
			be.ExpiresAt = e.expiresAt
			err = txn.SetEntry(be)
		}
		if err != nil {
			return fmt.Errorf("stage write: %w", errClosedBadger(err))
		}
	}
	err := txn.Commit()
	s.resetRead()
	if err != nil {
		return fmt.Errorf("write: %w", errClosedBadger(err))
	}
	// The transaction is visible from here on, synced or not: the in-memory
	// state must follow it, or the next group would reuse its seqs.
	s.apply(g)
	s.recent.written(g.ents)
	s.groups.Add(1)
	if !g.durable {
		// Lazy commits only: synced with the next durable group, or by the timer.
		s.unsynced = true
		s.lazyAppend = s.lazyAppend || g.appended
		if s.syncTimer == nil {
			s.syncTimer = time.NewTimer(s.opts.BatchInterval)
		}
		return nil
	}
	return s.syncLogs(g.big, g.appended)
}

// syncLazy syncs the lazy commits written since the last sync, if any.
func (s *Store) syncLazy() error {
	if !s.unsynced {
		return nil
	}
	return s.syncLogs(false, false)
}

// syncLogs makes every written group durable: it syncs the current WAL and value-log
// file, and the value-log files rotated away from while writing (big: this group wrote
// large values). Lazy groups written since the last sync may sit in a WAL or value-log
// file Badger has rotated away from since, which db.Sync does not sync: those are
// synced too. It then wakes the sinks if records were appended.
func (s *Store) syncLogs(big, appended bool) error {
	if big || s.unsynced {
		// The value log first: Badger's Sync syncs the WAL and then the value
		// log, and a power cut between the two leaves WAL entries that point at
		// value-log bytes that never reached the disk: a record that reads back
		// empty, with the rest of its commit applied (TestPowerCut). This also
		// syncs a value-log file rotated while the groups were written, which
		// db.Sync, syncing only the current one, would leave out.
		if err := s.syncVlogs(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if s.unsynced {
		if err := syncLogFiles(s.opts.Dir, ".mem", 0); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
	}
	s.fsyncs.Add(1)
	appended = appended || s.lazyAppend
	s.unsynced, s.lazyAppend = false, false
	if s.syncTimer != nil {
		s.syncTimer.Stop()
		s.syncTimer = nil
	}
	if appended {
		s.mu.Lock()
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
	return nil
}

// syncVlogs fsyncs the value-log files written since the last call: the one that
// was current then, and any Badger started since.
func (s *Store) syncVlogs() error {
	max, err := maxLogFid(s.opts.Dir, ".vlog")
	if err != nil {
		return err
	}
	if err := syncLogFiles(s.opts.Dir, ".vlog", s.maxVlog); err != nil {
		return err
	}
	s.maxVlog = max
	return nil
}

// apply makes a written group's state the store's.
func (s *Store) apply(g *batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, h := range g.heads {
		s.heads[name] = h
	}
	for id, seq := range g.cursors {
		s.cursors[id] = seq
	}
	s.total += g.total
	for name, n := range g.freed {
		s.freed[name] += n
	}
	for ns, d := range g.kvDelta {
		s.kvUsage[ns] = s.kvUsage[ns].add(d)
	}
}

// readTxn returns the snapshot the committer stages against: the database as
// of the last written group.
func (s *Store) readTxn() *badger.Txn {
	if s.rtxn == nil {
		s.rtxn = s.db.NewTransaction(false)
	}
	return s.rtxn
}

func (s *Store) resetRead() {
	if s.rtxn != nil {
		s.rtxn.Discard()
		s.rtxn = nil
	}
}

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
	return n, nil
}

// maintain runs the periodic work: value-log GC, then TTL expiry and trimming
// of every stream, a bounded number of deletions per transaction.
func (s *Store) maintain() {
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
				s.log.Warn("store: outbox maintenance", "stream", name, "err", j.err)
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
		s.log.Warn("store: recount kv usage", "err", err)
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
		s.log.Warn("store: reclaim", "err", err)
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
			s.log.Debug("store: value-log GC", "err", err)
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
			s.log.Error("store: sync after value-log GC", "err", err)
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
