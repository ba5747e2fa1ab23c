//go:build arm

package store

import (
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Whatever is asked, the options on 32-bit ARM keep every table build within
// its allocator's first buffer (see arch_arm.go).
func TestEnforceArch(t *testing.T) {
	bo := badger.DefaultOptions("").
		WithMemTableSize(64 << 20).
		WithBaseTableSize(512 << 10).
		WithValueThreshold(1 << 20).
		WithCompression(options.ZSTD).
		WithNumLevelZeroTablesStall(15)
	bo.TableSizeMultiplier = 2
	bo = enforceArch(bo)
	if bo.TableSizeMultiplier != 1 || bo.MemTableSize > bo.BaseTableSize || bo.BaseTableSize < 1<<20 ||
		bo.ValueThreshold > valueThreshold || bo.Compression != options.None || bo.BlockSize != blockSize ||
		bo.NumLevelZeroTablesStall > 3 || bo.NumLevelZeroTables >= bo.NumLevelZeroTablesStall || !bo.CompactL0OnClose {
		t.Errorf("unsafe options survive enforceArch: %+v", bo)
	}
	var o Options
	o.Dir = t.TempDir()
	o.tune = func(bo *badger.Options) { bo.TableSizeMultiplier = 10 }
	if got := badgerOptions(&o); got.TableSizeMultiplier != 1 {
		t.Errorf("badgerOptions let TableSizeMultiplier %d through", got.TableSizeMultiplier)
	}
}
