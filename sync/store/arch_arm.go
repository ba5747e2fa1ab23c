//go:build arm

package store

import (
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// enforceArch pins the Badger options that keep 32-bit ARM from losing data,
// whatever the rest of the code or a future knob asks for.
//
// The bug: ristretto's z.Allocator keeps "buffer index << 32 | offset" in a
// uint64, but Allocate moves to a new buffer with
// atomic.StoreUint64(&a.compIdx, uint64((bufIdx+1)<<32)), a shift of a 32-bit
// int on GOARCH=arm, which is 0. So the first time an allocator needs a second
// buffer, it starts over at offset 0 of the first one and writes over blocks of
// the table being built: keys vanish after a reopen, or iterators panic. (A
// fresh allocator asked for 512 bytes and then more loops forever instead.)
// Badger uses one allocator per table build (table.NewTableBuilder), so the fix
// is to make sure no table build ever outgrows its allocator's first buffer.
//
// The arithmetic. A builder asks its pool for an allocator of 2*TableSize
// bytes, rounded up to a power of two; a pooled allocator is reused whatever
// size it was made for. Each block of a table takes BlockSize+padding
// (4096+256) bytes from it when the block starts, and more only if one entry
// is larger than a block. An entry in a table is at most: a 4-byte header, the
// key (<= 1+64+1+256 bytes here, see MaxNameLen and MaxKeyLen, + 8 for the
// version; Badger's own move keys add 12), the value kept inline (< 1024 bytes,
// ValueThreshold; larger values are a 12-byte pointer) with 3-12 bytes of meta,
// and a 4-byte offset: under 1400 bytes, so no block ever grows, and a block is
// only closed once it holds more than 4096-1400 = 2696 bytes. A table's blocks
// therefore cost at most 4352/2696 = 1.62 times its data.
//   - Compactions end a table at 0.95*TableSize of data (ReachedCapacity,
//     checked after each key), plus one block: 1.62*(0.95*T + 4096) + one
//     block in progress < 2*T for T >= 1 MiB. TableSizeMultiplier = 1 makes T
//     the same BaseTableSize at every level, so every builder asks for the same
//     allocator size and a pooled one always fits.
//   - A memtable flush puts the whole memtable in one L0 table, built with
//     TableSize = BaseTableSize. The memtable stops taking writes at
//     MemTableSize plus one last batch (15%), and its arena spends more per
//     entry than a table does, so the table holds < 1.15*MemTableSize of data
//     and costs < 1.62*1.15 = 1.87*MemTableSize: under 2*BaseTableSize as long
//     as MemTableSize <= BaseTableSize.
//   - An L0->L0 compaction merges L0 tables into one table of unbounded size
//     (TableSize = MaxUint32, which on 32 bits even makes the allocator 512
//     bytes). Badger runs it only with at least 4 L0 tables; stalling writes at
//     3 L0 tables keeps it from ever running, and compacting L0 on Close keeps
//     a reopened database from starting with more.
//   - Compression and encryption allocate their output in the same allocator:
//     both stay off.
func enforceArch(bo badger.Options) badger.Options {
	bo.TableSizeMultiplier = 1
	bo.BlockSize = blockSize
	if bo.BaseTableSize < 1<<20 {
		bo.BaseTableSize = 1 << 20
	}
	if bo.MemTableSize > bo.BaseTableSize {
		bo.MemTableSize = bo.BaseTableSize
	}
	if bo.ValueThreshold > valueThreshold {
		bo.ValueThreshold = valueThreshold
	}
	bo.Compression = options.None
	bo.EncryptionKey = nil
	if bo.NumLevelZeroTablesStall > 3 {
		bo.NumLevelZeroTablesStall = 3
	}
	if bo.NumLevelZeroTables >= bo.NumLevelZeroTablesStall {
		bo.NumLevelZeroTables = bo.NumLevelZeroTablesStall - 1
	}
	bo.CompactL0OnClose = true
	bo.LmaxCompaction = false
	return bo
}
