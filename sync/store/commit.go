package store

import (
	"context"
	"fmt"
	"time"
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
