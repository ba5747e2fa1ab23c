package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"

	"github.com/moongate/moongate/internal/logkey"
)

// DefaultScrub is the period of the background check of every table (Options.Scrub).
const DefaultScrub = 6 * time.Hour

// scrubLoop runs scrub every period until Close.
func (s *Store) scrubLoop(period time.Duration) {
	defer close(s.scrubDone)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-s.scrubStop:
			return
		case <-tick.C:
			s.scrub()
		}
	}
}

// scrub verifies every table Badger has open, as Open does before opening them. A block
// that goes bad under a running gateway is otherwise silent: Badger takes its keys for
// missing, and a compaction may then drop them for good. A damaged table is logged at
// ERROR and stays in Stats().DamagedTables until the next open, which refuses it.
func (s *Store) scrub() {
	s.dbUse.RLock()
	if s.dbClosed {
		s.dbUse.RUnlock()
		return
	}
	tables := s.db.Tables()
	s.dbUse.RUnlock()
	for _, ti := range tables {
		path := table.NewFilename(ti.ID, s.opts.Dir)
		name := filepath.Base(path)
		// The store writes uncompressed tables only (badgerOptions).
		_, err := verifyTable(path, options.None, blockSize)
		if err == nil || errors.Is(err, os.ErrNotExist) { // gone: compacted away meanwhile
			continue
		}
		select {
		case <-s.scrubStop:
			return
		default:
		}
		s.damage.note(name, err)
	}
}

// damage records the tables found damaged while the store runs: by the scrub, or by a
// read whose block failed its checksum (Badger's OnBadBlock, patched in, see
// third_party/badger/MOONGATE.md). Each is logged once at ERROR and stays in
// Stats().DamagedTables until the next open, which refuses it; meanwhile the store
// takes no writes (writesRefused).
type damage struct {
	log    *slog.Logger
	mu     sync.Mutex
	tables []string
}

func (d *damage) note(table string, err error) {
	d.mu.Lock()
	known := slices.Contains(d.tables, table)
	if !known {
		d.tables = append(d.tables, table)
	}
	d.mu.Unlock()
	if !known {
		d.log.Error("store: a table is damaged: reads and scans over its bad blocks fail, and the store takes no more writes until the gateway is stopped and the store restored",
			logkey.File, table, logkey.Err, err, "what_to_do", "stop the gateway, run moongate store check, restore the data dir from a copy (DURABILITY.md, Recovery)")
	}
}

// badBlock is Badger's OnBadBlock.
func (d *damage) badBlock(table string, block int, err error) {
	d.note(filepath.Base(table), fmt.Errorf("block %d: %w", block, err))
}

// writesRefused is why the store takes no writes: a table is damaged. A compaction over
// it fails (levels.go keeps the old tables), so writes would pile up in level 0 until
// Badger stalled them for good, and the gateway would hang, commits and shutdown alike.
// Refused, a commit fails at once with ErrDamaged: the gateway leaves the event
// unacknowledged and says why, and stops cleanly.
func (d *damage) writesRefused() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.tables) == 0 {
		return nil
	}
	return fmt.Errorf("%w: table %s is damaged, so the store takes no writes: stop the gateway, run moongate store check, restore the data dir from a copy", ErrDamaged, d.tables[0])
}

func (d *damage) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.tables)
}
