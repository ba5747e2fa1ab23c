package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/skl"
)

// Badger sizing for small boards. Badger's defaults (64 MiB memtables, 2 MiB
// tables growing 2x per level, a 256 MiB block cache) measured 86 MB RSS with
// 10k keys; these keep the store's share of the gateway's 40 MB budget small.
// The same values are used on every architecture, so what the tests run is what
// ships; arch_arm.go additionally pins the ones 32-bit ARM depends on.
const (
	// memTableSize bounds the in-memory write buffer (and its WAL file). It is
	// also what one table built by a flush holds, so it is kept equal to
	// baseTableSize: every table build then needs the same allocator size.
	// It also sets the largest transaction (15%, about 150 KiB): a group of
	// commits larger than that is written in several.
	memTableSize = 1 << 20
	// baseTableSize is the size of every table on disk: TableSizeMultiplier is
	// 1, so tables are uniform across levels. Each table build holds a buffer
	// of twice this size, and Badger keeps up to 8 of them pooled, which is
	// most of the store's heap under load (measured: 2 MiB tables held 16 MiB
	// of buffers while a backlog drained); 1 MiB halves it.
	baseTableSize = 1 << 20
	// baseLevelSize is the target size of the first level below L0.
	baseLevelSize = 8 << 20
	// valueLogFileSize: values of valueThreshold bytes or more live in value-log
	// files of this size; GC rewrites or deletes whole files.
	valueLogFileSize = 16 << 20
	// valueThreshold keeps typical records and KV values (well under 1 KiB)
	// inside the LSM tree, where deleting them needs no value-log GC.
	valueThreshold = 1 << 10
	// blockSize is Badger's default table block size, stated because the
	// 32-bit ARM arithmetic depends on it.
	blockSize = 4 << 10
)

// badgerOptions returns the Badger options the store runs with.
func badgerOptions(o *Options) badger.Options {
	bo := badger.DefaultOptions(o.Dir).
		WithLogger(badgerLogger{o.Logger}).
		// The store syncs itself, once per group of commits (see Commit).
		WithSyncWrites(false).
		// One goroutine writes; no transaction reads what another writes.
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithMemTableSize(memTableSize).
		WithNumMemtables(2).
		WithBaseTableSize(baseTableSize).
		WithBaseLevelSize(baseLevelSize).
		WithValueLogFileSize(valueLogFileSize).
		WithValueThreshold(valueThreshold).
		WithBlockSize(blockSize).
		// Tables are not compressed, so a block cache would only copy what the
		// page cache already holds.
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithCompression(options.None).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(3).
		WithNumCompactors(2).
		WithCompactL0OnClose(true).
		// A block read that fails its checksum is an error of the read, and is told to
		// OnBadBlock (the store's damage list): third_party/badger/MOONGATE.md. Open
		// still verifies every table first (verify.go). A value read from the value log
		// that fails its checksum is an error.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true)
	// No With method: uniform table sizes across levels.
	bo.TableSizeMultiplier = 1
	if o.tune != nil {
		o.tune(&bo)
	}
	if !o.unsafeArch {
		bo = enforceArch(bo)
	}
	return bo
}

// txnLimits returns how much one Badger transaction may hold under bo, with a
// margin, mirroring Badger's own check (Txn.checkSize).
func txnLimits(bo badger.Options) (size, count int64) {
	maxBatchSize := 15 * bo.MemTableSize / 100
	maxBatchCount := maxBatchSize / int64(skl.MaxNodeSize)
	return maxBatchSize * 9 / 10, maxBatchCount * 9 / 10
}

// badgerLogger puts Badger's log lines on slog, one level quieter than Badger
// rates them: its Infof lines (compactions, replays) are debug detail here.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) logf(level slog.Level, format string, args []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (l badgerLogger) Errorf(f string, a ...any)   { l.logf(slog.LevelError, f, a) }
func (l badgerLogger) Warningf(f string, a ...any) { l.logf(slog.LevelWarn, f, a) }
func (l badgerLogger) Infof(f string, a ...any)    { l.logf(slog.LevelDebug, f, a) }
func (l badgerLogger) Debugf(f string, a ...any)   { l.logf(slog.LevelDebug-4, f, a) }

var _ badger.Logger = badgerLogger{}
