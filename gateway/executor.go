package gateway

import (
	"context"
	"sync"
)

// Bounds on the events one function holds, from the moment a source hands one over until
// its invocation is done.
//
// Past maxPending, a device on the embedded broker waits: its connection is not read until
// there is room, and TCP slows it down, so a burst is delayed, not dropped. At the rates a
// gateway sees (thousands a second) that is well under a second of work, so latency under
// overload stays bounded too.
//
// Sources that cannot wait without harm are not held. QoS 1 from an external broker is
// queued whatever the count: paho reads our PUBACKs on the goroutine that delivers to us,
// and the broker's max_inflight_messages bounds it already. QoS 0 from an external broker,
// the gateway's own publishes, sensor readings, GPIO edges and ticks are queued up to
// maxQueued and dropped past it, counted (reason queue_full).
const (
	maxPending = 1024
	maxQueued  = 16384
)

// maxWorkers bounds the goroutines that run one function's events. An event holds its
// worker while its invocation waits for a VM and then for its commit's fsync, so the
// bound is not the VM count: group commit needs many commits in flight to share one
// fsync (2 workers cut the durable rate from 17k to 5.5k events a second, 128 by a tenth
// with 50 devices of 32 messages in flight; 1024 measured as before). The VMs bound the
// invocations running at once; this bounds the goroutines, which were one per ordering
// key and unbounded (170k topics made 103k of them).
const maxWorkers = 1024

// executor runs the events of one function: in arrival order per key, different keys in
// parallel on at most maxWorkers goroutines (the warm VMs bound how many invoke at once), each invocation
// committed before the next event of its key starts, so a function always sees its own
// previous state. Keys take turns: a key with a backlog goes to the back of the line after
// each event, so one busy topic (one device) cannot starve the others.
type executor struct {
	name string
	g    *Gateway
	// ctx is cancelled by abort (the function was deleted): the running invocation stops
	// and a commit still retrying gives up.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	queues  map[string][]*task  // per key: the events not started yet
	ready   []string            // keys with queued events and no worker on them, in turn
	busy    map[string]struct{} // keys a worker is running an event of
	pending int                 // events handed over and not done
	room    chan struct{}       // closed, and replaced, when pending drops below maxPending
	workers int
	stopped bool
	aborted bool // stopped by abort: QoS 0 events handed back are counted as dropped
	running sync.WaitGroup
}

func newExecutor(g *Gateway, name string) *executor {
	ctx, cancel := context.WithCancel(g.runCtx)
	return &executor{name: name, g: g, ctx: ctx, cancel: cancel, queues: map[string][]*task{},
		busy: map[string]struct{}{}, room: make(chan struct{})}
}

// enqueue hands t to the function. When the function holds maxPending events already, a
// source that may wait (wait) is held until there is room or the function stops; others
// are not held (see maxPending and maxQueued).
func (e *executor) enqueue(t *task, wait bool) {
	e.mu.Lock()
	gone := false // the gateway stops or the function goes while the source waits
	for wait && !gone && !e.stopped && e.pending >= maxPending {
		room := e.room
		e.mu.Unlock()
		select {
		case <-room:
		case <-e.ctx.Done():
			gone = true
		case <-e.g.stopping:
			gone = true
		}
		e.mu.Lock()
	}
	if gone || e.stopped {
		aborted := e.aborted
		e.mu.Unlock()
		e.handBack(t, aborted)
		return
	}
	if e.pending >= maxQueued && !t.durable && !wait {
		e.mu.Unlock()
		e.g.metrics.dropped.WithLabelValues(e.name, "queue_full").Inc()
		t.done(nil) // a QoS 0 event may be dropped; acknowledging it is a no-op
		return
	}
	e.pending++
	q := e.queues[t.key]
	if _, running := e.busy[t.key]; !running && len(q) == 0 {
		e.ready = append(e.ready, t.key)
	}
	e.queues[t.key] = append(q, t)
	e.spawn()
	e.mu.Unlock()
}

// spawn starts a worker when a key is ready and fewer than maxWorkers run. e.mu is held.
func (e *executor) spawn() {
	for !e.stopped && len(e.ready) > e.workers-len(e.busy) && e.workers < maxWorkers {
		e.workers++
		e.running.Add(1)
		go e.work()
	}
}

// work runs ready keys' events, one event per turn, until none is ready.
func (e *executor) work() {
	defer e.running.Done()
	e.mu.Lock()
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

		err := e.g.process(e.ctx, e.name, t)

		e.mu.Lock()
		delete(e.busy, key)
		if len(e.queues[key]) > 0 {
			e.ready = append(e.ready, key) // its next event waits its turn
		}
		e.pending--
		if e.pending == maxPending-1 {
			close(e.room)
			e.room = make(chan struct{})
		}
		e.mu.Unlock()
		t.done(err)
		e.mu.Lock()
	}
	e.workers--
	e.mu.Unlock()
}

// handBack returns an event that never ran to its source unacknowledged: a QoS 1 message
// is redelivered by the broker or the device. A QoS 0 event of a deleted function is gone,
// and counted.
func (e *executor) handBack(t *task, aborted bool) {
	if aborted && !t.durable {
		e.g.metrics.dropped.WithLabelValues(e.name, "deleted").Inc()
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
	e.stopped = true
	e.aborted = e.aborted || abort
	close(e.room) // wake the waiting sources: they find the executor stopped
	e.room = make(chan struct{})
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
