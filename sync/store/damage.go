package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/table"
)

// checkManifest refuses a data dir that holds Badger's tables or logs but no MANIFEST:
// Badger would take it for a new store and delete every table in it, so a lost MANIFEST
// would silently become the loss of every function, KV key and outbox record.
func checkManifest(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, badger.ManifestFilename)); err == nil {
		return nil
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("read %s: %w", badger.ManifestFilename, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read the data dir: %w", err)
	}
	var data []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".sst", ".vlog", ".mem":
			data = append(data, e.Name())
		}
	}
	if len(data) == 0 {
		return nil // a new store
	}
	return fmt.Errorf("%w: %s is missing but %d table and log files are there (%s): opening would delete them. "+
		"Restore the data dir from a copy, or move it aside (mv %s %s.damaged) to start with an empty store",
		ErrDamaged, badger.ManifestFilename, len(data), strings.Join(data[:min(3, len(data))], ", "), dir, dir)
}

// checkDir refuses a data dir Badger would open with a silent loss: a lost MANIFEST or a
// damaged table. It returns the tables it verified and the log tails the replay will
// drop, copied aside first.
func checkDir(dir string, bo badger.Options, now time.Time) (TableReport, []LogLoss, error) {
	unlock, err := lockDir(dir)
	if err != nil {
		return TableReport{}, nil, err
	}
	defer unlock()
	if err := checkManifest(dir); err != nil {
		return TableReport{}, nil, err
	}
	tr, err := verifyTables(dir, bo)
	if err != nil {
		return tr, nil, err
	}
	if err := removeEmptyWALs(dir); err != nil {
		return tr, nil, err
	}
	losses, err := cutTornWALs(dir, now)
	if err != nil {
		return tr, nil, err
	}
	tails, err := checkLogs(dir, now)
	if err != nil {
		return tr, nil, err
	}
	losses = append(losses, tails...)
	cut, err := checkManifestCut(dir, tr, now)
	if cut != nil {
		losses = append(losses, *cut)
	}
	return tr, losses, err
}

// removeEmptyWALs deletes the write-ahead logs a crash left empty. Badger creates a .mem
// file and then sizes it; a process killed between the two leaves it empty, and Badger
// then refuses the whole dir ("while opening fid: N err: Create a new file": it sizes the
// file and takes that for an error). An empty log holds nothing to lose.
func removeEmptyWALs(dir string) error {
	logs, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return err
	}
	for _, p := range logs {
		if fi, err := os.Stat(p); err == nil && fi.Size() == 0 {
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("remove the empty write-ahead log %s a crash left: %w", p, err)
			}
		}
	}
	return nil
}

// checkManifestCut handles a MANIFEST that ends in a partial entry. Badger cuts it at
// its last whole entry and deletes every table the rest would have listed: after a torn
// write (the power failed while a compaction committed) those tables hold nothing that
// is not elsewhere, but a MANIFEST cut short by damage takes every table it no longer
// lists with it. Which of the two it was cannot be told from the file, so the tables are
// moved to dir/damaged (Badger then has none to delete) and the cut is reported as a loss.
func checkManifestCut(dir string, tr TableReport, now time.Time) (*LogLoss, error) {
	if tr.manifestEnd >= tr.mfSize {
		return nil, nil
	}
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return nil, err
	}
	var unlisted []string
	for _, p := range ssts {
		if id, ok := table.ParseFileID(p); ok && !tr.listed[id] {
			unlisted = append(unlisted, p)
		}
	}
	if len(unlisted) == 0 {
		return nil, nil
	}
	data, err := os.ReadFile(filepath.Join(dir, badger.ManifestFilename))
	if err != nil {
		return nil, err
	}
	loss := &LogLoss{File: badger.ManifestFilename, Offset: tr.manifestEnd, Bytes: tr.mfSize - tr.manifestEnd}
	if loss.Copy, err = keepCopy(dir, badger.ManifestFilename, data, now); err != nil {
		return nil, err
	}
	for _, p := range unlisted {
		to := filepath.Join(filepath.Dir(loss.Copy), filepath.Base(p)+"."+now.UTC().Format("20060102T150405Z"))
		if err := os.Rename(p, to); err != nil {
			return nil, fmt.Errorf("move %s aside: %w", filepath.Base(p), err)
		}
		loss.Tables = append(loss.Tables, filepath.Base(p))
	}
	return loss, nil
}

// openBadger opens the database; a damaged file that makes Badger panic (a truncated
// table, say) is an error naming the damage, not a crash of the gateway.
func openBadger(bo badger.Options) (db *badger.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: the store could not be read (%v): restore the data dir from a copy, or move it aside to start with an empty store", ErrDamaged, r)
		}
	}()
	return badger.Open(bo)
}
