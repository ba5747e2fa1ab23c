// Package memguard tells when the live heap nears the Go runtime's soft memory limit.
//
// Past the limit the garbage collector runs back to back (20k retained messages of 2 KB
// took the heap to 166 MiB against a 48 MiB limit, and the collector then took 70-90% of
// the CPU until a restart). So the gateway refuses new state while the live heap is above
// a share of the limit: it degrades (devices wait, retained messages are delivered but not
// kept, idle sessions end) instead of spinning.
package memguard

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// Pressure starts when the live heap passes High of the limit and ends below Low: the
// gap keeps it from flapping on every collection.
const (
	High = 0.75
	Low  = 0.60
)

const liveHeap = "/gc/heap/live:bytes"

// Guard watches the live heap. The zero value is not usable: use New.
type Guard struct {
	pressed  atomic.Bool
	live     atomic.Uint64 // bytes, at the last check
	limit    func() int64
	onChange func(pressed bool, live, limit int64)
	sample   []metrics.Sample
}

// New returns a Guard on the runtime's soft memory limit; onChange, if not nil, is called
// when pressure starts or ends.
func New(onChange func(pressed bool, live, limit int64)) *Guard {
	return &Guard{limit: func() int64 { return debug.SetMemoryLimit(-1) }, onChange: onChange,
		sample: []metrics.Sample{{Name: liveHeap}}}
}

// Pressed reports whether new state should be refused.
func (g *Guard) Pressed() bool { return g != nil && g.pressed.Load() }

// Live is the live heap at the last check, in bytes.
func (g *Guard) Live() uint64 { return g.live.Load() }

// Run checks every interval until ctx ends.
func (g *Guard) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		g.Check()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check reads the live heap once (runtime/metrics: no stop of the world).
func (g *Guard) Check() {
	metrics.Read(g.sample)
	if g.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	live := g.sample[0].Value.Uint64()
	g.live.Store(live)
	limit := g.limit()
	if limit <= 0 || limit == math.MaxInt64 { // no limit: nothing to keep under
		g.set(false, live, limit)
		return
	}
	switch {
	case float64(live) > High*float64(limit):
		g.set(true, live, limit)
	case float64(live) < Low*float64(limit):
		g.set(false, live, limit)
	}
}

func (g *Guard) set(pressed bool, live uint64, limit int64) {
	if g.pressed.Swap(pressed) != pressed && g.onChange != nil {
		g.onChange(pressed, int64(live), limit)
	}
}
