package store

import (
	"context"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/moongate/moongate/internal/logkey"
)

// The committer: the one goroutine that writes. It takes every request waiting, stages
// them into one group (batch.go), writes and syncs the group, then answers them.

// run is the committer: the only goroutine that writes to Badger.
func (s *Store) run() {
	defer close(s.done)
	tick := time.NewTicker(s.opts.Maintenance)
	defer tick.Stop()
	jobs := make([]*job, 0, maxGroupJobs)
	for {
		var syncDue <-chan time.Time
		if s.syncTimer != nil {
			syncDue = s.syncTimer.C
		}
		select {
		case j := <-s.jobs:
			jobs = s.collect(append(jobs[:0], j))
			s.runGroup(jobs)
		case <-syncDue:
			s.syncTimer = nil
			if err := s.syncLazy(); err != nil {
				s.log.Error("store: sync of lazy commits", logkey.Err, err)
			}
		case <-tick.C:
			s.maintain()
		case reply := <-s.maintainNow:
			s.maintain()
			close(reply)
		case reply := <-s.pings:
			close(reply)
		case <-s.quit:
			for {
				jobs = s.collect(jobs[:0])
				if len(jobs) == 0 {
					break
				}
				s.runGroup(jobs)
			}
			if err := s.syncLazy(); err != nil {
				s.log.Error("store: sync of lazy commits", logkey.Err, err)
			}
			return
		}
	}
}

// Ping returns once the committer is between groups: it is not stuck in a write or a
// sync (a storage device that stopped answering, a full disk's retry). A health check
// (the systemd watchdog) calls it with a deadline.
func (s *Store) Ping(ctx context.Context) error {
	reply := make(chan struct{})
	select {
	case s.pings <- reply:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("store: the committer did not answer: %w", ctx.Err())
	}
	<-reply // the committer closes it at once
	return nil
}

// collect adds the jobs already waiting to jobs: they form one group.
func (s *Store) collect(jobs []*job) []*job {
	for len(jobs) < maxGroupJobs {
		select {
		case j := <-s.jobs:
			jobs = append(jobs, j)
		default:
			return jobs
		}
	}
	return jobs
}

// runGroup stages every job on top of the ones before it, then writes them in
// one transaction and syncs. A job that fails to stage is left out.
func (s *Store) runGroup(jobs []*job) {
	defer s.resetRead()
	noSpace := s.checkSpace()
	damaged := s.damage.writesRefused()
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
		if damaged != nil {
			j.err = damaged
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
		s.log.Warn("store: statfs failed", "dir", s.opts.Dir, logkey.Err, err)
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
