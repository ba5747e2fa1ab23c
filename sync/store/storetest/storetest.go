// Package storetest opens real stores on disk for the tests of the packages that use
// sync/store, the way net/http/httptest starts real servers.
package storetest

import (
	"testing"

	"github.com/moongate/moongate/sync/store"
)

// Open opens the store in dir, with the free-space floor off (a test's temp dir may sit
// on a nearly full disk), after applying opts to the options. It fails t on error; the
// caller closes the store.
func Open(t testing.TB, dir string, opts ...func(*store.Options)) *store.Store {
	t.Helper()
	o := store.Options{Dir: dir, MinFreeBytes: -1}
	for _, f := range opts {
		f(&o)
	}
	st, err := store.Open(o)
	if err != nil {
		t.Fatalf("open the store in %s: %v", dir, err)
	}
	return st
}
