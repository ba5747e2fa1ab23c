package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/ristretto/v2/z"
)

// A power cut can tear a group that was written and not yet synced: the kernel writes
// dirty pages back on its own, in any order, so a WAL page holding the group's entries
// can reach the disk while the value-log page holding its large values does not. Replay
// would then apply the transaction, and its large values would read as missing: a commit
// half applied. Such a group was never synced, so never acknowledged (a sync covers the
// value log first, syncLogs), and neither was anything written after it.
//
// cutTornWALs finds the first WAL transaction with a value pointer past the end of what
// the value log's replay keeps, where the value log ends as a power cut leaves it
// (tornTail), and zeroes the WALs from that transaction on, after
// keeping a copy of each file it changes: replay then drops the torn group whole, and
// what followed it, instead of applying it half. The loss is reported as for a damaged
// log (it is the unacknowledged tail of the logs).

// Badger's value pointer (structs.go in badger/v4): file id, length and offset, in the
// machine's byte order, in the value of an entry marked bitValuePointer.
const (
	bitValuePointer = 1 << 1
	valuePointerLen = 12
)

func cutTornWALs(dir string, now time.Time) ([]LogLoss, error) {
	wals, err := logFids(dir, ".mem")
	if err != nil {
		return nil, err
	}
	// value-log fid -> where its replay stops, when what follows is a torn write; -1
	// otherwise. A file that is gone: value-log GC deletes a file once it has rewritten
	// what is live in it, and an older WAL entry may still point there, shadowed by the
	// rewrite. A file whose tail is damaged over more than one page: that is not what a
	// power cut leaves, and what its pointers lead to may have been acknowledged; the
	// damage is reported (checkLogs) and its reads fail, nothing is cut.
	ends := map[uint32]int{}
	vlogEnd := func(fid uint32) (int, error) {
		if end, ok := ends[fid]; ok {
			return end, nil
		}
		end := -1
		path := filepath.Join(dir, fmt.Sprintf("%06d.vlog", fid))
		if _, err := os.Stat(path); err == nil {
			mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
			if err != nil {
				return 0, fmt.Errorf("read %s: %w", filepath.Base(path), err)
			}
			if e := logEnd(mf.Data); tornTail(mf.Data, e) {
				end = e
			}
			mf.Close(-1)
		}
		ends[fid] = end
		return end, nil
	}
	var losses []LogLoss
	cutting := false // a torn transaction was found: every later WAL goes too
	for _, fid := range wals {
		loss, torn, err := cutTornWAL(dir, fmt.Sprintf("%05d.mem", fid), cutting, vlogEnd, now)
		if err != nil {
			return nil, err
		}
		cutting = cutting || torn
		if loss != nil {
			losses = append(losses, *loss)
		}
	}
	return losses, nil
}

// cutTornWAL cuts one WAL at its first torn transaction, or from its start when all is
// true; torn says it had one. The file is read through a read-only mapping: a WAL is
// sized for a whole memtable.
func cutTornWAL(dir, name string, all bool, vlogEnd func(uint32) (int, error), now time.Time) (loss *LogLoss, torn bool, err error) {
	path := filepath.Join(dir, name)
	if fi, err := os.Stat(path); err != nil || fi.Size() <= logHeaderSize {
		return nil, false, err // nothing written to it yet
	}
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", name, err)
	}
	defer mf.Close(-1)
	cut := logHeaderSize
	if !all {
		if cut, err = tornAt(mf.Data, vlogEnd); err != nil || cut < 0 {
			return nil, false, err
		}
	}
	rest := len(bytes.TrimRight(mf.Data[cut:], "\x00"))
	if rest == 0 {
		return nil, !all, nil
	}
	loss = &LogLoss{File: name, Offset: int64(cut), Bytes: int64(rest)}
	if loss.Copy, err = keepCopy(dir, name, mf.Data, now); err != nil {
		return nil, false, err
	}
	if err := zeroFrom(path, int64(cut), int64(rest)); err != nil {
		return nil, false, fmt.Errorf("cut the torn tail of %s: %w", name, err)
	}
	return loss, !all, nil
}

// tornAt returns the offset of the first transaction (or lone entry) in a WAL, within
// what replay keeps, with a value pointer past the end of its value log; -1 for none.
func tornAt(data []byte, vlogEnd func(fid uint32) (int, error)) (int, error) {
	end := logEnd(data)
	start := logHeaderSize // of the transaction the entry at off belongs to
	inTxn := false
	for off := logHeaderSize; off < end; {
		meta, key, value, n, ok := logEntry(data[off:])
		if !ok || len(key) == 0 {
			return -1, nil
		}
		if !inTxn {
			start = off
		}
		if meta&bitValuePointer != 0 && len(value) >= valuePointerLen {
			fid := binary.NativeEndian.Uint32(value[0:])
			length := binary.NativeEndian.Uint32(value[4:])
			offset := binary.NativeEndian.Uint32(value[8:])
			vend, err := vlogEnd(fid)
			if err != nil {
				return 0, err
			}
			if vend >= 0 && int(offset)+int(length) > vend {
				return start, nil
			}
		}
		switch {
		case meta&bitTxn != 0:
			inTxn = true
		case meta&bitFinTxn != 0:
			inTxn = false
		}
		off += n
	}
	return -1, nil
}

// tornTail reports whether what follows end in a log is what a power cut leaves: zeros
// (the unsynced writes that never reached the disk), with at most one page holding
// anything else (the page the disk was writing, torn).
func tornTail(data []byte, end int) bool {
	const page = 4096
	dirty := -1 // the page holding non-zero bytes
	for i := end; i < len(data); i++ {
		if data[i] == 0 {
			continue
		}
		if p := i / page; dirty < 0 {
			dirty = p
		} else if p != dirty {
			return false
		}
	}
	return true
}

// logFids lists the ids of dir's log files with ext, in order.
func logFids(dir, ext string) ([]uint32, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []uint32
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ext)
		if !ok {
			continue
		}
		if id, err := strconv.ParseUint(name, 10, 32); err == nil {
			ids = append(ids, uint32(id))
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// zeroFrom overwrites n bytes of path from off with zeros, where replay stops, and syncs.
func zeroFrom(path string, off, n int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
