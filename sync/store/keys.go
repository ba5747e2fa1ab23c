package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Limits on names, keys and values. The key limits are part of the 32-bit ARM
// safety argument in arch_arm.go: they bound the size of one entry in a table.
const (
	// MaxNameLen bounds namespaces (function names), streams and consumers.
	MaxNameLen = 64
	// MaxKeyLen bounds a KV key within its namespace.
	MaxKeyLen = 256
	// MaxValueLen bounds a KV value, a record's data, a version blob and a meta value.
	MaxValueLen = 1 << 20
)

// One Badger keyspace, split by a leading byte. Names never contain 0x00, so
// 0x00 ends a name and a prefix scan of one namespace or stream cannot run into
// another whose name merely starts the same way.
const (
	tagKV      = 'k' // k ns 0 key                      -> JSON value
	tagRecord  = 'o' // o stream 0 seq ms size          -> encoded record
	tagHead    = 's' // s stream                        -> encoded streamHead
	tagCursor  = 'c' // c consumer 0 stream             -> seq
	tagVersion = 'v' // v name 0 version                -> blob
	tagActive  = 'a' // a name                          -> version
	tagMeta    = 'm' // m key                           -> blob
	tagNone    = 'z' // one empty key, written and dropped to flush the memtable
)

func checkName(kind, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty %s: %w", kind, ErrInvalid)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%s %.20q...: longer than %d bytes: %w", kind, name, MaxNameLen, ErrTooLarge)
	case bytes.IndexByte([]byte(name), 0) >= 0:
		return fmt.Errorf("%s %q contains a NUL byte: %w", kind, name, ErrInvalid)
	}
	return nil
}

func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("empty key: %w", ErrInvalid)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("key %.20q...: longer than %d bytes: %w", key, MaxKeyLen, ErrTooLarge)
	}
	return nil
}

func checkValue(v []byte) error {
	if len(v) > MaxValueLen {
		return fmt.Errorf("value of %d bytes, more than %d: %w", len(v), MaxValueLen, ErrTooLarge)
	}
	return nil
}

func nameKey(tag byte, name string, sep bool, extra int) []byte {
	k := make([]byte, 0, 2+len(name)+extra)
	k = append(k, tag)
	k = append(k, name...)
	if sep {
		k = append(k, 0)
	}
	return k
}

func kvPrefix(ns string) []byte { return nameKey(tagKV, ns, true, 0) }

func kvKey(ns, key string) []byte {
	return append(nameKey(tagKV, ns, true, len(key)), key...)
}

func recPrefix(stream string) []byte { return nameKey(tagRecord, stream, true, 20) }

// recKey carries the record's sequence number, append time and accounted size,
// so that trimming, dropping and quota accounting need only keys, not values.
func recKey(stream string, seq uint64, ms int64, size uint32) []byte {
	k := recPrefix(stream)
	k = binary.BigEndian.AppendUint64(k, seq)
	k = binary.BigEndian.AppendUint64(k, uint64(ms))
	return binary.BigEndian.AppendUint32(k, size)
}

// recSeekKey is the smallest key of the record with seq in stream.
func recSeekKey(stream string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(recPrefix(stream), seq)
}

// parseRecKey returns the fields recKey encoded; the key must start with prefix.
func parseRecKey(k []byte, prefixLen int) (seq uint64, ms int64, size uint32, ok bool) {
	t := k[prefixLen:]
	if len(t) != 20 {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint64(t), int64(binary.BigEndian.Uint64(t[8:])), binary.BigEndian.Uint32(t[16:]), true
}

func headKey(stream string) []byte { return nameKey(tagHead, stream, false, 0) }

func cursorKey(consumer, stream string) []byte {
	return append(nameKey(tagCursor, consumer, true, len(stream)), stream...)
}

func versionPrefix(name string) []byte { return nameKey(tagVersion, name, true, 4) }

func versionKey(name string, version int) []byte {
	return binary.BigEndian.AppendUint32(versionPrefix(name), uint32(version))
}

func activeKey(name string) []byte { return nameKey(tagActive, name, false, 0) }

func metaKey(key string) []byte { return nameKey(tagMeta, key, false, 0) }
