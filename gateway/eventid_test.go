package gateway

import (
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// TestEventIDs checks that event ids made at once on many goroutines are ULIDs of now,
// all different.
func TestEventIDs(t *testing.T) {
	const goroutines, each = 8, 20000
	ids := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				ids[g] = append(ids[g], newEventID())
			}
		})
	}
	wg.Wait()
	seen := make(map[string]bool, goroutines*each)
	for _, list := range ids {
		for _, id := range list {
			u, err := ulid.ParseStrict(id)
			if err != nil {
				t.Fatalf("%q: %v", id, err)
			}
			if d := time.Since(ulid.Time(u.Time())); d < 0 || d > time.Minute {
				t.Fatalf("%s is %v away from now", id, d)
			}
			if seen[id] {
				t.Fatalf("%s made twice", id)
			}
			seen[id] = true
		}
	}
}
