package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
)

// LogLoss is the tail of a log file that replay dropped: Badger replays a memtable WAL
// (.mem) or the last value-log file (.vlog) up to the first entry that fails its
// checksum or the last whole transaction, truncates the file there and says nothing.
// A clean log ends in zeros; anything else after that point is data the open dropped,
// kept in Copy.
type LogLoss struct {
	File   string // name in the data dir
	Offset int64  // replay kept the bytes before it
	Bytes  int64  // bytes after Offset up to the last non-zero one
	Copy   string // path of the file's copy, as it was before the open
	// Tables, for a MANIFEST cut short: the tables it no longer lists, which Badger would
	// have deleted, moved next to the copy.
	Tables []string
}

// Badger's log format (value.go, memtable.go in badger/v4): a 20-byte header, then
// entries of meta, user meta, uvarint key length, value length and expiry, the key,
// the value, and a big-endian CRC-32C of all of it. Transactions are entries marked
// bitTxn, closed by one marked bitFinTxn whose value is the commit timestamp. Badger
// does not export its reader, hence this copy, which only measures.
const (
	logHeaderSize = 20
	bitTxn        = 1 << 6
	bitFinTxn     = 1 << 7
)

// checkLogs finds what replaying dir's logs will drop, and copies each such file into
// dir/damaged before Badger truncates it.
func checkLogs(dir string, now time.Time) ([]LogLoss, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	lastVlog, _ := maxLogFid(dir, ".vlog")
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".mem"):
			names = append(names, name)
		case name == fmt.Sprintf("%06d.vlog", lastVlog):
			// Badger replays and truncates only the last value-log file.
			names = append(names, name)
		}
	}
	var losses []LogLoss
	for _, name := range names {
		loss, err := checkLog(dir, name, now)
		if err != nil {
			return nil, err
		}
		if loss != nil {
			losses = append(losses, *loss)
		}
	}
	return losses, nil
}

// checkLog reads one log through a read-only mapping (a value-log file is 16 MiB, more
// than the heap should take at start) and returns its loss, or nil.
func checkLog(dir, name string, now time.Time) (*LogLoss, error) {
	path := filepath.Join(dir, name)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if fi.Size() <= logHeaderSize {
		return nil, nil // nothing written to it yet
	}
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer mf.Close(-1)
	end := logEnd(mf.Data)
	rest := bytes.TrimRight(mf.Data[end:], "\x00")
	if len(rest) == 0 {
		return nil, nil
	}
	loss := &LogLoss{File: name, Offset: int64(end), Bytes: int64(len(rest))}
	if loss.Copy, err = keepCopy(dir, name, mf.Data, now); err != nil {
		return nil, err
	}
	return loss, nil
}

// logEnd returns the offset up to which Badger's replay keeps data.
func logEnd(data []byte) int {
	off, end := logHeaderSize, logHeaderSize
	if len(data) < off {
		return len(data)
	}
	var txn uint64 // commit timestamp of the open transaction, 0 for none
	for {
		meta, key, value, n, ok := logEntry(data[off:])
		if !ok || len(key) == 0 {
			return end
		}
		off += n
		switch {
		case meta&bitTxn != 0:
			ts := y.ParseTs(key)
			if txn == 0 {
				txn = ts
			}
			if ts != txn {
				return end
			}
		case meta&bitFinTxn != 0:
			ts, err := strconv.ParseUint(string(value), 10, 64)
			if err != nil || ts != txn {
				return end
			}
			txn, end = 0, off
		default:
			if txn != 0 {
				return end
			}
			end = off
		}
	}
}

// logEntry decodes the entry at the start of b; ok is false where replay stops.
func logEntry(b []byte) (meta byte, key, value []byte, n int, ok bool) {
	if len(b) < 2 {
		return 0, nil, nil, 0, false
	}
	h := 2
	var lens [3]uint64 // key length, value length, expiry
	for i := range lens {
		v, m := binary.Uvarint(b[h:])
		if m <= 0 {
			return 0, nil, nil, 0, false
		}
		lens[i], h = v, h+m
	}
	kl, vl := lens[0], lens[1]
	if kl > 1<<16 || vl > uint64(len(b)) || uint64(h)+kl+vl+crc32.Size > uint64(len(b)) {
		return 0, nil, nil, 0, false
	}
	body := h + int(kl) + int(vl)
	if crc32.Checksum(b[:body], y.CastagnoliCrcTable) != binary.BigEndian.Uint32(b[body:]) {
		return 0, nil, nil, 0, false
	}
	return b[0], b[h : h+int(kl)], b[h+int(kl) : body], body + crc32.Size, true
}

// keepCopy writes data to dir/damaged/name.TIME and returns the path.
func keepCopy(dir, name string, data []byte, now time.Time) (string, error) {
	aside := filepath.Join(dir, "damaged")
	if err := os.MkdirAll(aside, 0o750); err != nil {
		return "", err
	}
	path := filepath.Join(aside, name+"."+now.UTC().Format("20060102T150405Z"))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("keep a copy of %s: %w", name, err)
	}
	return path, nil
}
