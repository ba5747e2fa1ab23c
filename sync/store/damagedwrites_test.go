package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// warnCounter is a slog handler that counts the records at WARN and above.
type warnCounter struct{ n atomic.Int64 }

func (h *warnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *warnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.n.Add(1)
	}
	return nil
}
func (h *warnCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *warnCounter) WithGroup(string) slog.Handler      { return h }

// A table that goes bad under a running store cannot be compacted, so writes over its
// keys would pile up in level 0 until Badger stalled them for good: commits, and the
// gateway's shutdown, hung. The store refuses writes instead, at once, and the failing
// compaction is retried with growing waits, not logged 20 times a second.
func TestDamagedTableRefusesWrites(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	fillDamageStore(t, dir, n, "big").Close()
	logs := &warnCounter{}
	s, err := Open(Options{Dir: dir, Scrub: -1, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	garble(t, onlyFile(t, dir, "*.sst"), 20000)

	value := []byte(`"` + strings.Repeat("x", 200) + `"`)
	start := time.Now()
	var refused error
	for i := 0; refused == nil; i++ {
		if time.Since(start) > time.Minute {
			t.Fatalf("writes over a damaged table still taken after %d commits", i)
		}
		c := Commit{Namespace: "fn"}
		for j := range 50 {
			// New keys within the table's range (its outbox records sort after them),
			// away from the bad block (among the big values, which sort first): their
			// reads do not meet it, only the compaction of their level-0 tables into
			// the damaged one does.
			c.KV = append(c.KV, KVOp{Kind: OpSet, Key: fmt.Sprintf("zz%06d-%d", j, i), Value: value})
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := s.Commit(ctx, c)
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			t.Fatalf("commit %d hung for 10 s over a damaged table", i)
		case err != nil && s.damage.writesRefused() != nil && strings.Contains(err.Error(), "takes no writes"):
			refused = err
		}
	}
	if !errors.Is(refused, ErrDamaged) {
		t.Fatalf("refusal %v; want ErrDamaged", refused)
	}
	t.Logf("refused after %v: %v", time.Since(start), refused)

	// The failing compaction pauses: a few tries in 5 s (two lines each), not a hundred.
	before := logs.n.Load()
	time.Sleep(5 * time.Second)
	if warned := logs.n.Load() - before; warned > 30 {
		t.Fatalf("%d warnings in 5 s after the refusal: the failing compaction is retried without a pause", warned)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Logf("close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close hung on a store with a damaged table")
	}
}
