// Package store is the gateway's embedded database, on Badger: every
// function's KV namespace, the outbox of records waiting for the cloud (one
// append-only log per stream, with a cursor per consumer), function versions and
// small metadata.
//
// All writes go through one goroutine, the committer, which groups concurrent
// requests into one Badger transaction and one fsync (see Commit and
// DURABILITY.md). Reads go straight to Badger and may run concurrently.
package store

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/oklog/ulid/v2"

	"github.com/moongate/moongate/internal/atomicfile"
	"github.com/moongate/moongate/internal/logkey"
)

// OnFull says what the outbox does when a commit's records do not fit under
// Options.MaxOutboxBytes.
type OnFull int

const (
	// DropOldest deletes pending records to make room, the oldest of the stream
	// that holds the most first (see Options.MaxOutboxBytes). Each dropped record
	// is counted (Stats, cause "quota").
	DropOldest OnFull = iota
	// RejectNew fails the commit with ErrFull; nothing of it is written. The
	// rejected records are counted (Stats, cause "rejected").
	RejectNew
)

// DeadStream is the outbox's dead-letter stream: events that failed every try, and
// records a receiver rejected. Its name starts with $, so "*" does not take it.
const DeadStream = "$dead"

// Defaults for the zero values of Options.
const (
	DefaultMaxOutboxBytes = 256 << 20
	DefaultOutboxTTL      = 168 * time.Hour
	DefaultMinFreeBytes   = 64 << 20
	DefaultMaintenance    = time.Minute
)

// Options configure a Store. The zero value of every field but Dir is valid.
type Options struct {
	// Dir holds the database; it is created if missing.
	Dir string

	// MaxOutboxBytes bounds the pending outbox records of all streams together,
	// counted as key plus value bytes. 0 means DefaultMaxOutboxBytes. Past it, with
	// DropOldest, the stream that holds the most sheds its oldest records first.
	MaxOutboxBytes int64
	// KVQuota bounds each KV namespace (a function's): a commit that would take one past
	// it fails with ErrQuota. The zero value is no bound.
	KVQuota KVQuota

	// MaxStreamBytes, if above 0, bounds one stream's pending records too: past it that
	// stream sheds its own oldest (DropOldest) or the commit fails (RejectNew).
	MaxStreamBytes int64

	// OutboxTTL is how long a record may wait in the outbox; older records are
	// deleted by the periodic maintenance and counted (cause "ttl").
	// 0 means DefaultOutboxTTL.
	OutboxTTL time.Duration

	// OnFull is the policy when the outbox quota is reached.
	OnFull OnFull

	// MinFreeBytes is the free space the file system must keep: below it,
	// commits, appends and puts fail with ErrNoSpace while reads, acks and
	// deletions go on. Badger writes its logs and tables through memory
	// mappings, where running out of space is a SIGBUS rather than an error, so
	// the store stops writing before the disk is full. The default leaves room
	// for a memtable flush, a compaction and a value-log file.
	// 0 means DefaultMinFreeBytes; a negative value disables the check.
	MinFreeBytes int64

	// Maintenance is the period of the background work: value-log GC, outbox
	// TTL expiry, and trimming of records every consumer has acknowledged.
	// 0 means DefaultMaintenance.
	Maintenance time.Duration

	// Scrub is the period of the background check of every table against its checksums
	// (see Stats().DamagedTables). 0 means DefaultScrub; a negative value disables it.
	Scrub time.Duration

	// BatchInterval is the longest a lazy commit (Commit.Lazy) waits for its sync: the
	// store writes it at once and syncs it with the next commit that is not lazy, or
	// BatchInterval after it at the latest. Fewer syncs write fewer pages to flash
	// (an SD card wears out by the pages written); a power loss can take the lazy
	// commits of the last BatchInterval. 0 syncs lazy commits like any other.
	BatchInterval time.Duration

	// Logger receives the store's and Badger's messages. nil discards them.
	Logger *slog.Logger

	// Test seams, settable only from this package's tests.
	tune       func(*badger.Options) // adjusts the Badger options before enforceArch
	unsafeArch bool                  // skips enforceArch, to reproduce the 32-bit ARM bug
	now        func() time.Time      // clock for record ids and TTL
}

// Store is an open database. Its methods are safe for concurrent use.
type Store struct {
	db   *badger.DB
	opts Options
	log  *slog.Logger
	now  func() time.Time

	txnSize, txnCount int64 // how much one Badger transaction may take

	// gate orders submissions against Close: a submitter holds it shared while
	// it hands a job over, Close holds it exclusively to set closed, so every
	// job handed over before Close is still run.
	gate   sync.RWMutex
	closed bool
	// dbUse guards reads against Close: Badger panics on a read after its Close
	// instead of returning an error, so reads hold dbUse shared and Close takes
	// it exclusively to close Badger.
	dbUse    sync.RWMutex
	dbClosed bool
	jobs     chan *job
	quit     chan struct{} // closed by Close: the committer drains jobs and stops
	done     chan struct{} // closed by the committer when it has stopped
	// maintainNow asks the committer to run maintenance at once (tests).
	maintainNow chan chan struct{}
	// pings are answered by the committer between groups (Ping).
	pings chan chan struct{}

	// scrubStop is closed by Close; the scrub goroutine closes scrubDone when it stopped.
	scrubStop, scrubDone chan struct{}

	closeOnce sync.Once
	closeErr  error

	// mu guards the state below. The committer is its only writer.
	mu    sync.RWMutex
	heads map[string]streamHead
	// kvUsage is each KV namespace's keys and bytes (kvusage.go); kvExpiring says that
	// keys with an expiry exist, so maintenance recounts.
	kvUsage    map[string]KVUsage
	kvExpiring bool
	cursors    map[cursorID]uint64
	consumers  map[string][]string
	total      int64             // pending outbox bytes, all streams
	rejected   map[string]uint64 // records refused by RejectNew, per stream
	changed    chan struct{}
	damage     *damage // tables found damaged since the open

	commits, groups, fsyncs atomic.Uint64

	recent recentKV // committed values of KV keys written lately

	// Owned by the committer goroutine.
	entropy *ulid.MonotonicEntropy
	freed   map[string]int64 // record bytes deleted per stream since its last reclaim
	rtxn    *badger.Txn      // read snapshot for the group being staged
	group   batch            // the group being staged, reused (see runGroup)
	job     batch            // the job being staged on top of it, reused
	maxVlog uint32           // highest value-log file id seen

	tables TableReport // what the open verified
	losses []LogLoss   // what the open's replay dropped

	// Owned by the committer: lazy commits written but not synced yet.
	unsynced   bool
	lazyAppend bool        // some of them appended records: wake the sinks at the sync
	syncTimer  *time.Timer // armed while unsynced: the sync BatchInterval after the first
}

type cursorID struct{ consumer, stream string }

// Open opens (creating if needed) the store in opts.Dir and starts its
// committer and maintenance.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("open store: no directory: %w", ErrInvalid)
	}
	if opts.MaxOutboxBytes == 0 {
		opts.MaxOutboxBytes = DefaultMaxOutboxBytes
	}
	if opts.OutboxTTL == 0 {
		opts.OutboxTTL = DefaultOutboxTTL
	}
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = DefaultMinFreeBytes
	}
	if opts.Maintenance == 0 {
		opts.Maintenance = DefaultMaintenance
	}
	if opts.Scrub == 0 {
		opts.Scrub = DefaultScrub
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	// Durably: Badger syncs the directory when it adds a file, but not the parent
	// that holds the directory itself.
	if err := atomicfile.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
	}
	bo := badgerOptions(&opts)
	dmg := &damage{log: opts.Logger}
	bo.OnBadBlock = dmg.badBlock
	tables, losses, err := checkDir(opts.Dir, bo, opts.now())
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
	}
	db, err := openBadger(bo)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
	}
	for _, l := range losses {
		opts.Logger.Error("store: a log was damaged: the open dropped what followed the damage",
			logkey.File, l.File, "offset", l.Offset, "bytes_dropped", l.Bytes, "copy", l.Copy, "tables_moved_aside", l.Tables,
			"what_to_do", "commits after the offset are lost; restore the data dir from a copy to get them back (DURABILITY.md, Recovery)")
	}
	s := &Store{
		db:          db,
		opts:        opts,
		log:         opts.Logger,
		now:         opts.now,
		jobs:        make(chan *job, 1024),
		quit:        make(chan struct{}),
		done:        make(chan struct{}),
		maintainNow: make(chan chan struct{}),
		pings:       make(chan chan struct{}),
		heads:       make(map[string]streamHead),
		cursors:     make(map[cursorID]uint64),
		consumers:   make(map[string][]string),
		rejected:    make(map[string]uint64),
		changed:     make(chan struct{}),
		entropy:     ulid.Monotonic(rand.Reader, 0),
		freed:       make(map[string]int64),
		tables:      tables,
		losses:      losses,
		damage:      dmg,
		scrubStop:   make(chan struct{}),
		scrubDone:   make(chan struct{}),
	}
	s.group.s, s.job.s = s, s
	s.txnSize, s.txnCount = txnLimits(bo)
	if err := s.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
	}
	s.maxVlog, _ = maxLogFid(opts.Dir, ".vlog")
	go s.run()
	if opts.Scrub > 0 {
		go s.scrubLoop(opts.Scrub)
	} else {
		close(s.scrubDone)
	}
	return s, nil
}

// load reads the outbox heads, the cursors and the KV usage into memory.
func (s *Store) load() error {
	return s.view(func(txn *badger.Txn) error {
		s.kvUsage, s.kvExpiring = s.countKV(txn)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagHead}})
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			stream := string(item.Key()[1:])
			err := valueOf(item, func(v []byte) error {
				h, err := decodeHead(v)
				s.heads[stream] = h
				s.total += h.Bytes
				return err
			})
			if err != nil {
				it.Close()
				return fmt.Errorf("load stream %q: %w", stream, err)
			}
		}
		if err := scanErr(it); err != nil {
			it.Close()
			return fmt.Errorf("load streams: %w", err)
		}
		it.Close()

		it = txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagCursor}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			consumer, stream, ok := splitName(item.Key()[1:])
			if !ok {
				continue
			}
			err := valueOf(item, func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("cursor %s/%s: %d bytes", consumer, stream, len(v))
				}
				s.cursors[cursorID{consumer, stream}] = binary.BigEndian.Uint64(v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return scanErr(it)
	})
}

// Close stops the committer after it has run every request already handed to
// it, then closes Badger. Calls made after Close fail with ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.gate.Lock()
		s.closed = true
		s.gate.Unlock()
		close(s.quit)
		<-s.done
		close(s.scrubStop)
		<-s.scrubDone
		s.dbUse.Lock()
		s.dbClosed = true
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close store %s: %w", s.opts.Dir, err)
		}
		s.dbUse.Unlock()
	})
	return s.closeErr
}

// Changed returns a channel that is closed when records are next appended
// (and made durable). Sinks wait on it, then call Changed again.
func (s *Store) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Drops counts records removed before every consumer had them, by cause.
type Drops struct {
	Quota    uint64 // deleted by DropOldest to make room
	TTL      uint64 // older than OutboxTTL
	Rejected uint64 // refused by RejectNew (never written)
}

// StreamStats describes one stream of the outbox.
type StreamStats struct {
	FirstSeq, LastSeq uint64 // pending records are FirstSeq..LastSeq; none if FirstSeq > LastSeq
	Pending           int64  // records
	Bytes             int64  // accounted bytes (key and value)
	OldestMs          int64  // append time (unix ms) of the oldest pending record, 0 if none
	Dropped           Drops
}

// ConsumerStats describes one consumer's position in one stream.
type ConsumerStats struct {
	Cursor   uint64 // last acknowledged seq
	Pending  int64  // records after Cursor
	OldestMs int64  // append time (unix ms) of the first record after Cursor, 0 if none
}

// Stats is a snapshot of the store's counters.
type Stats struct {
	Streams        map[string]StreamStats
	Consumers      map[string]map[string]ConsumerStats // consumer -> stream
	PendingRecords int64
	PendingBytes   int64
	Dropped        Drops  // totals over all streams
	DiskBytes      int64  // bytes allocated to the store's files
	DiskFree       int64  // free bytes on its file system
	Commits        uint64 // requests committed (invocations, appends, acks, puts)
	Groups         uint64 // Badger transactions written for them
	Fsyncs         uint64 // syncs of the logs; about one per group
	// LogLosses lists the log tails the open's replay dropped as damaged; each one is
	// commits lost (see LogLoss).
	LogLosses []LogLoss
	// DamagedTables lists the tables found damaged since the open, by a read of a bad
	// block or by the background scrub (Options.Scrub): a point read of a key in a bad
	// block fails, a scan skips the block's keys.
	DamagedTables []string
}

// Stats returns a snapshot of the outbox and the store's counters.
func (s *Store) Stats() Stats {
	st := Stats{
		Streams:   make(map[string]StreamStats),
		Consumers: make(map[string]map[string]ConsumerStats),
		Commits:   s.commits.Load(),
		Groups:    s.groups.Load(),
		Fsyncs:    s.fsyncs.Load(),
		LogLosses: slices.Clone(s.losses),
	}
	s.mu.RLock()
	st.DamagedTables = s.damage.list()
	for name, h := range s.heads {
		ss := StreamStats{
			FirstSeq: h.First, LastSeq: h.Last, Pending: h.pending(), Bytes: h.Bytes,
			Dropped: Drops{Quota: h.DroppedQuota, TTL: h.DroppedTTL, Rejected: s.rejected[name]},
		}
		if ss.Pending > 0 {
			ss.OldestMs = h.FirstMs
		}
		st.Streams[name] = ss
		st.PendingRecords += ss.Pending
		st.PendingBytes += h.Bytes
		st.Dropped.Quota += ss.Dropped.Quota
		st.Dropped.TTL += ss.Dropped.TTL
		st.Dropped.Rejected += ss.Dropped.Rejected
	}
	type pos struct {
		consumer, stream string
		cursor           uint64
	}
	var positions []pos
	for c, patterns := range s.consumers {
		for name := range s.heads {
			if MatchStream(patterns, name) {
				positions = append(positions, pos{c, name, s.cursors[cursorID{c, name}]})
			}
		}
	}
	s.mu.RUnlock()

	for _, p := range positions {
		ss := st.Streams[p.stream]
		cs := ConsumerStats{Cursor: p.cursor}
		from := max(p.cursor+1, ss.FirstSeq)
		if from <= ss.LastSeq {
			cs.Pending = int64(ss.LastSeq - from + 1)
			cs.OldestMs = s.recordMs(p.stream, from)
		}
		if st.Consumers[p.consumer] == nil {
			st.Consumers[p.consumer] = make(map[string]ConsumerStats)
		}
		st.Consumers[p.consumer][p.stream] = cs
	}
	st.DiskBytes, _ = diskUsage(s.opts.Dir)
	st.DiskFree, _ = freeBytes(s.opts.Dir)
	return st
}

// recordMs returns the append time of the first record at or after seq.
func (s *Store) recordMs(stream string, seq uint64) int64 {
	var ms int64
	_ = s.view(func(txn *badger.Txn) error {
		prefix := recPrefix(stream)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		it.Seek(recSeekKey(stream, seq))
		if it.Valid() {
			_, ms, _, _ = parseRecKey(it.Item().Key(), len(prefix))
		}
		return nil
	})
	return ms
}

// Streams returns the names of the outbox streams, sorted.
func (s *Store) Streams() ([]string, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	names := make([]string, 0, len(s.heads))
	for name := range s.heads {
		names = append(names, name)
	}
	s.mu.RUnlock()
	sort.Strings(names)
	return names, nil
}

// view runs fn in a read transaction, or fails with ErrClosed once the store is closed.
func (s *Store) view(fn func(*badger.Txn) error) error {
	s.dbUse.RLock()
	defer s.dbUse.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	return s.db.View(fn)
}

func (s *Store) checkOpen() error {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// errClosedBadger maps Badger's own closed error onto ErrClosed.
func errClosedBadger(err error) error {
	if errors.Is(err, badger.ErrDBClosed) {
		return ErrClosed
	}
	return err
}
