package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// TableReport is what verifyTables found: the tables it read and their bytes, and where
// the MANIFEST's last whole entry ends (Badger cuts the file there) of its size.
type TableReport struct {
	Tables              int
	Bytes               int64
	manifestEnd, mfSize int64
	listed              map[uint64]bool // the tables the MANIFEST lists
}

// verifyTables reads every table the MANIFEST lists and checks its index and every
// block against their checksums, before Badger opens them. Badger cannot be left to do
// it: with checksums checked on open it drops a damaged table and carries on without
// its keys (logging only), its own check dereferences nil on a block it cannot read
// (v4.9.6, in a goroutine, so the panic kills the process), and a block that fails its
// checksum during a read is taken for a key that is not there. So a damaged table
// refuses the open, naming the file, and nothing on disk is changed.
func verifyTables(dir string, bo badger.Options) (TableReport, error) {
	var rep TableReport
	mf, end, size, err := readManifest(dir, bo)
	if err != nil || mf == nil {
		return rep, err
	}
	rep.manifestEnd, rep.mfSize = end, size
	rep.listed = make(map[uint64]bool, len(mf.Tables))
	ids := make([]uint64, 0, len(mf.Tables))
	for id := range mf.Tables {
		ids = append(ids, id)
		rep.listed[id] = true
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		tm := mf.Tables[id]
		if tm.KeyID != 0 {
			// The store never encrypts; an encrypted table is not one of ours.
			return rep, damaged(table.IDToFilename(id), "is encrypted, which this store never does")
		}
		n, err := verifyTable(table.NewFilename(id, dir), tm.Compression, bo.BlockSize)
		if errors.Is(err, os.ErrNotExist) {
			return rep, damaged(table.IDToFilename(id), "is listed in the MANIFEST but missing")
		}
		if err != nil {
			return rep, err
		}
		rep.Tables++
		rep.Bytes += n
	}
	return rep, nil
}

// readManifest returns the MANIFEST's tables, or nil for a new store, with the offset
// where its last whole entry ends and its size.
func readManifest(dir string, bo badger.Options) (mf *badger.Manifest, end, size int64, err error) {
	fp, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, 0, nil // checkManifest has ruled out a lost one
	}
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read %s: %w", badger.ManifestFilename, err)
	}
	defer fp.Close()
	fi, err := fp.Stat()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read %s: %w", badger.ManifestFilename, err)
	}
	m, end, err := badger.ReplayManifestFile(fp, bo.ExternalMagicVersion, bo)
	if err != nil {
		return nil, 0, 0, damaged(badger.ManifestFilename, fmt.Sprintf("cannot be read (%v)", err))
	}
	return &m, end, fi.Size(), nil
}

// verifyTable checks one table file and returns its size; a missing file is an error
// wrapping os.ErrNotExist. Badger panics on some
// malformed tables (a truncated file, a garbled index) instead of returning an error:
// the panic is recovered here, in the goroutine that reads, and becomes the damage.
func verifyTable(path string, c options.CompressionType, blockSize int) (size int64, err error) {
	name := filepath.Base(path)
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("table %s: %w", name, err)
	}
	if fi.Size() == 0 {
		return 0, damaged(name, "is empty")
	}
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			err = serr // deleted between the two: by a compaction, when Badger runs
		}
		return 0, fmt.Errorf("table %s: %w", name, err)
	}
	defer func() {
		if r := recover(); r != nil {
			err = damaged(name, fmt.Sprintf("cannot be read (%v)", firstLine(r)))
		}
		mf.Close(-1)
	}()
	// NoVerification: Table.VerifyChecksum then checks each block itself and returns
	// the error, where the other modes make it dereference the nil block it failed to read.
	t, err := table.OpenTable(mf, table.Options{ChkMode: options.NoVerification, Compression: c, BlockSize: blockSize})
	if err != nil {
		return 0, damaged(name, fmt.Sprintf("cannot be read (%v)", err))
	}
	if err := t.VerifyChecksum(); err != nil {
		return 0, damaged(name, fmt.Sprintf("fails its checksum (%v)", err))
	}
	return fi.Size(), nil
}

// damaged is the ErrDamaged error for file, with what to do about it.
func damaged(file, what string) error {
	return fmt.Errorf("%w: %s %s. Restore the data dir from a copy, or move it aside to start with an empty store (see DURABILITY.md, Recovery)", ErrDamaged, file, what)
}

// firstLine returns the first line of a panic's message: Badger's carry a dump of the
// table's index after it.
func firstLine(v any) string {
	s, _, _ := strings.Cut(strings.TrimSpace(fmt.Sprint(v)), "\n")
	return s
}

// valueOf calls fn with item's value. Badger logs a value-log read that fails (a
// checksum mismatch, a file cut short) and hands back no value and no error; a value
// pointer that yields nothing is that failure, returned here as damage.
func valueOf(item *badger.Item, fn func([]byte) error) error {
	return item.Value(func(v []byte) error {
		if v == nil && item.ValueSize() > 0 {
			return fmt.Errorf("%w: the value of key %q cannot be read from the value log (see the log for Badger's error)", ErrDamaged, item.Key())
		}
		return fn(v)
	})
}

// valueCopy returns a copy of item's value, like valueOf.
func valueCopy(item *badger.Item) ([]byte, error) {
	var c []byte
	err := valueOf(item, func(v []byte) error {
		c = append([]byte{}, v...)
		return nil
	})
	return c, err
}
