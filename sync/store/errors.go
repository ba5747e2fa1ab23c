package store

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Errors returned by the store. Callers test them with errors.Is; the returned
// errors wrap them with context.
var (
	// ErrClosed is returned by every call made after Close.
	ErrClosed = errors.New("store closed")

	// ErrFull is returned when a commit's records do not fit under
	// Options.MaxOutboxBytes and the policy is RejectNew, or when a single commit
	// is larger than the whole quota. Nothing of the commit is written.
	ErrFull = errors.New("outbox full")

	// ErrNoSpace is returned when the free space of the file system holding the
	// store is below Options.MinFreeBytes. Nothing of the commit is written;
	// reads keep working and writes succeed again once space returns.
	ErrNoSpace = errors.New("disk space low")

	// ErrNotFound is returned when a named item (a function version) does not exist.
	ErrNotFound = errors.New("not found")

	// ErrNotNumber is returned when an incr meets a value that is not a JSON number.
	ErrNotNumber = errors.New("value is not a number")

	// ErrTooLarge is returned for a key, value or commit beyond the store's limits
	// (see MaxKeyLen, MaxValueLen and MaxNameLen).
	ErrTooLarge = errors.New("too large")

	// ErrQuota is returned for a commit that would take a function's KV namespace past
	// Options.KVQuota. Nothing of the commit is written.
	ErrQuota = errors.New("kv quota exceeded")

	// ErrInvalid is returned for a malformed argument: an empty or ill-formed
	// name, a value that is not JSON, an unknown operation.
	ErrInvalid = errors.New("invalid argument")

	// ErrDamaged is returned by Open for a data dir it must not open as it is: files
	// missing or unreadable. Nothing is changed on disk. A running store returns it for
	// a read or scan over a table block that went bad, and, once a table is found
	// damaged, for every write (Stats().DamagedTables names the tables).
	ErrDamaged = errors.New("store damaged")
)

// scanErr is what ended it early: a table block that failed its read, so the scan did
// not see the keys after it. Badger's merge goes on past a failed table, so without
// this a damaged block's keys would just be missing from the result.
func scanErr(it *badger.Iterator) error {
	if err := it.Err(); err != nil {
		return fmt.Errorf("%w: a scan met an unreadable table block: %v (run moongate store check)", ErrDamaged, err)
	}
	return nil
}
