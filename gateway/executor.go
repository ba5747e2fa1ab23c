package gateway

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Bounds on the events one function holds, from the moment a source hands one over until
// its invocation is done.
//
// Past maxPending, a device on the embedded broker waits: its connection is not read until
// there is room, and TCP slows it down, so a burst is delayed, not dropped. At the rates a
// gateway sees (thousands a second) that is well under a second of work, so latency under
// overload stays bounded too.
//
// An external broker's messages wait too: the goroutine that delivers them is not read
// from until there is room, so the broker holds the rest (its queue, its in-flight window).
//
// Sources that cannot wait without harm are not held: the gateway's own publishes on the
// embedded broker, sensor readings, GPIO edges and ticks are queued up to maxQueued and
// dropped past it, counted (reason queue_full).
const (
	maxPending = 1024
	maxQueued  = 16384
	// pressedPending replaces maxPending while the gateway is short of memory
	// (internal/memguard): sources wait sooner, so queued events stop growing the heap.
	pressedPending = 64
)

// maxWorkers bounds the goroutines that run one function's events. An event holds its
// worker while its invocation waits for a VM and then for its commit's fsync, so the
// bound is not the VM count: group commit needs many commits in flight to share one
// fsync (2 workers cut the durable rate from 17k to 5.5k events a second, 128 by a tenth
// with 50 devices of 32 messages in flight; 1024 measured as before). The VMs bound the
// invocations running at once; this bounds the goroutines, which were one per ordering
// key and unbounded (170k topics made 103k of them).
const maxWorkers = 1024

// A worker that finds nothing ready waits up to workerLinger for more before it ends, and
// up to maxIdleWorkers of a function wait so. A new goroutine starts on a small stack
// and grows it, copying, on the way into a VM: with events queued in bursts (an external
// broker's deliveries) workers ended and started again for every burst, and that growth
// was a quarter of the gateway's CPU.
const (
	workerLinger   = time.Second
	maxIdleWorkers = 128
)

// executor runs the events of one function: in arrival order per key, different keys in
// parallel on at most maxWorkers goroutines (the warm VMs bound how many invoke at once),
// each invocation committed before the next event of its key starts, so a function always
// sees its own previous state. Keys take turns: a key with a backlog goes to the back of
// the line after each event, so one busy topic (one device) cannot starve the others.
//
// A source on a goroutine of its own (inline) runs its event itself when the event's key
// has nothing queued and no other key waits its turn: a device's reading then costs no
// hand-off between goroutines, and the device is not read again until its reading is done,
// which is the backpressure it would get anyway.
type executor struct {
	name  string
	cur   func() *version // the function's current version (registry.current), nil once deleted
	env   *executorEnv
	stats *fnStats    // the function's counters: drops count there too
	shed  atomic.Bool // overflow: drop_oldest (see config.OverflowDropOldest)
	// ctx is cancelled by abort (the function was deleted): the running invocation stops
	// and a commit still retrying gives up.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	queues  map[string][]*task  // per key: the events not started yet
	ready   []string            // keys with queued events and no worker on them, in turn
	busy    map[string]struct{} // keys a worker is running an event of
	pending int                 // events handed over and not done, and slots granted to waiters
	waiters []*waiter           // sources waiting for room, first come first served
	workers int                 // goroutines running events: workers and sources running inline
	idle    int                 // workers waiting for work (see workerLinger), counted in workers
	// woken is how many wake tokens are in wake for the idle workers to take; a worker that
	// times out as a token arrives leaves it to the next one to go idle.
	woken   int
	wake    chan struct{}
	quit    chan struct{} // closed when the executor stops: idle workers end
	stopped bool
	aborted bool // stopped by abort: QoS 0 events handed back are counted as dropped
	running sync.WaitGroup
}

// A waiter is a source held until the executor has room. Each freed slot is granted to
// the first waiter alone: waking them all for one slot cost a fifth of the CPU at full
// speed with a hundred devices waiting.
type waiter struct {
	ready   chan struct{} // closed when granted, or when the executor stops
	granted bool          // a slot is counted in pending for this waiter
}

// executorEnv is what the executors of every function share.
type executorEnv struct {
	ctx      context.Context // cancelled when the gateway stops taking events
	stopping <-chan struct{} // closed then too
	dropped  *prometheus.CounterVec
	pressed  func() bool // the gateway is short of memory (internal/memguard)
	process  func(ctx context.Context, cur func() *version, t *task) error
}

func newExecutor(env *executorEnv, name string, cur func() *version, stats *fnStats) *executor {
	ctx, cancel := context.WithCancel(env.ctx)
	return &executor{name: name, cur: cur, env: env, stats: stats, ctx: ctx, cancel: cancel, queues: map[string][]*task{},
		busy: map[string]struct{}{}, wake: make(chan struct{}, maxIdleWorkers), quit: make(chan struct{})}
}

// source says how an event's source may be treated.
type source struct {
	wait   bool // it may be held while the function is full
	inline bool // it may run the event on its own goroutine: that goroutine serves it alone
}

// enqueue hands t to the function. When the function holds maxPending events already, a
// source that may wait is held until there is room or the function stops; others are not
// held (see maxPending and maxQueued).
func (e *executor) enqueue(t *task, src source) {
	if !t.durable && e.shed.Load() {
		// Shedding: the source is neither held nor runs the event itself (that would
		// hold it too), so that what it sends meanwhile is read and the oldest dropped.
		src = source{}
	}
	limit := e.maxHeld()
	e.mu.Lock()
	if e.pending >= limit && !t.durable && e.shed.Load() {
		if old := e.dropOldest(t.key); old != nil {
			e.pending--
			e.mu.Unlock()
			e.drop(old, "overflow")
			e.mu.Lock()
		}
	}
	if src.wait && !e.stopped && (e.pending >= limit || len(e.waiters) > 0) {
		w := &waiter{ready: make(chan struct{})}
		e.waiters = append(e.waiters, w)
		e.mu.Unlock()
		gone := false // the gateway stops or the function goes while the source waits
		select {
		case <-w.ready:
		case <-e.ctx.Done():
			gone = true
		case <-e.env.stopping:
			gone = true
		}
		e.mu.Lock()
		if w.granted {
			e.pending-- // taken again below, under the same lock
		} else if i := slices.Index(e.waiters, w); i >= 0 {
			e.waiters = slices.Delete(e.waiters, i, i+1)
		}
		if gone {
			e.grant() // a slot granted to a source that left goes to the next
			aborted := e.aborted
			e.mu.Unlock()
			e.handBack(t, aborted)
			return
		}
	}
	if e.stopped {
		aborted := e.aborted
		e.mu.Unlock()
		e.handBack(t, aborted)
		return
	}
	if e.pending >= maxQueued && !t.durable && !src.wait {
		e.mu.Unlock()
		e.drop(t, "queue_full")
		return
	}
	e.pending++
	_, running := e.busy[t.key]
	q := e.queues[t.key]
	if src.inline && !running && len(q) == 0 && len(e.ready) == 0 && e.workers < maxWorkers {
		e.busy[t.key] = struct{}{}
		e.workers++
		e.running.Add(1)
		e.mu.Unlock()
		e.run(t)
		e.mu.Lock()
		e.workers--
		e.running.Done()
		e.spawn() // the events of other sources that queued meanwhile
		e.mu.Unlock()
		return
	}
	if !running && len(q) == 0 {
		e.ready = append(e.ready, t.key)
	}
	e.queues[t.key] = append(q, t)
	e.spawn()
	e.mu.Unlock()
}

// dropOldest takes out the oldest queued event that may be dropped (not durable): of key
// if it has one, else of the keys in turn. e.mu is held.
func (e *executor) dropOldest(key string) *task {
	take := func(k string) *task {
		q := e.queues[k]
		i := slices.IndexFunc(q, func(t *task) bool { return !t.durable })
		if i < 0 {
			return nil
		}
		t := q[i]
		if len(q) == 1 {
			delete(e.queues, k)
			if j := slices.Index(e.ready, k); j >= 0 {
				e.ready = slices.Delete(e.ready, j, j+1)
			}
		} else {
			e.queues[k] = slices.Delete(q, i, i+1)
		}
		return t
	}
	if t := take(key); t != nil {
		return t
	}
	for _, k := range e.ready {
		if t := take(k); t != nil {
			return t
		}
	}
	return nil
}

// drop ends an event that will never run, counted by reason. Only events that may be
// lost (not durable) are dropped; acknowledging them is a no-op.
func (e *executor) drop(t *task, reason string) {
	e.env.dropped.WithLabelValues(e.name, reason).Inc()
	e.stats.dropped.Add(1)
	t.done(nil)
}

// maxHeld is how many events the function may hold before sources wait.
func (e *executor) maxHeld() int {
	if e.env.pressed() {
		return pressedPending
	}
	return maxPending
}

// grant hands the room there is to the first waiters. e.mu is held.
func (e *executor) grant() {
	for limit := e.maxHeld(); len(e.waiters) > 0 && e.pending < limit; {
		w := e.waiters[0]
		e.waiters[0] = nil
		e.waiters = e.waiters[1:]
		w.granted = true
		e.pending++
		close(w.ready)
	}
}

// spawn wakes idle workers for the ready keys, and starts more while keys are ready
// beyond the workers free to take them and fewer than maxWorkers run. e.mu is held.
func (e *executor) spawn() {
	if e.stopped {
		return
	}
	for ; e.woken < min(len(e.ready), e.idle); e.woken++ {
		e.wake <- struct{}{} // never blocks: woken <= idle <= maxIdleWorkers
	}
	for len(e.ready) > e.workers-len(e.busy) && e.workers < maxWorkers {
		e.workers++
		e.running.Add(1)
		go e.work()
	}
}

// work runs ready keys' events, one event per turn, and waits up to workerLinger for
// more when none is ready.
func (e *executor) work() {
	defer e.running.Done()
	e.mu.Lock()
	for {
		for !e.stopped && len(e.ready) > 0 {
			key := e.ready[0]
			e.ready[0] = ""
			e.ready = e.ready[1:]
			q := e.queues[key]
			t := q[0]
			q[0] = nil
			if len(q) == 1 {
				delete(e.queues, key)
			} else {
				e.queues[key] = q[1:]
			}
			e.busy[key] = struct{}{}
			e.mu.Unlock()
			e.run(t)
			e.mu.Lock()
		}
		if e.stopped || e.idle >= maxIdleWorkers {
			break
		}
		// A worker that timed out as work came looks once more: spawn counted it free.
		if !e.linger() && len(e.ready) == 0 {
			break
		}
	}
	e.workers--
	e.mu.Unlock()
}

// linger waits, as an idle worker, for a wake token, up to workerLinger; it reports
// whether a token woke it. e.mu is held, and released meanwhile.
func (e *executor) linger() bool {
	e.idle++
	e.mu.Unlock()
	t := time.NewTimer(workerLinger)
	woken := false
	select {
	case <-e.wake:
		woken = true
	case <-t.C:
	case <-e.quit:
	}
	t.Stop()
	e.mu.Lock()
	e.idle--
	if woken {
		e.woken--
	}
	return woken
}

// run processes t, whose key the caller marked busy, and then frees the key and t's slot.
func (e *executor) run(t *task) {
	err := e.env.process(e.ctx, e.cur, t)
	e.mu.Lock()
	delete(e.busy, t.key)
	if len(e.queues[t.key]) > 0 {
		e.ready = append(e.ready, t.key) // its next event waits its turn
	}
	e.pending--
	e.grant()
	e.mu.Unlock()
	t.done(err)
}

// handBack returns an event that never ran to its source unacknowledged: a QoS 1 message
// is redelivered by the broker or the device. A QoS 0 event of a deleted function is gone,
// and counted.
func (e *executor) handBack(t *task, aborted bool) {
	if aborted && !t.durable {
		e.env.dropped.WithLabelValues(e.name, "deleted").Inc()
		e.stats.dropped.Add(1)
	}
	t.done(errAbandoned)
}

// stop finishes the invocations running, hands back the events that never started, and
// waits. Sources waiting for room are handed back their events too.
func (e *executor) stop() { e.halt(false) }

// abort is stop for a deleted function: the running invocations are canceled too.
func (e *executor) abort() { e.halt(true) }

func (e *executor) halt(abort bool) {
	e.mu.Lock()
	if !e.stopped {
		close(e.quit)
	}
	e.stopped = true
	e.aborted = e.aborted || abort
	for _, w := range e.waiters { // wake the waiting sources: they find the executor stopped
		close(w.ready)
	}
	e.waiters = nil
	e.mu.Unlock()
	if abort {
		e.cancel()
	}
	e.running.Wait()
	e.mu.Lock()
	var left []*task
	for _, q := range e.queues {
		left = append(left, q...)
	}
	e.queues, e.ready = map[string][]*task{}, nil
	e.pending -= len(left)
	aborted := e.aborted
	e.mu.Unlock()
	for _, t := range left {
		e.handBack(t, aborted)
	}
}
