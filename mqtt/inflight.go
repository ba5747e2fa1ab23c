package mqtt

import (
	"sync"
	"time"
)

// inflight counts the QoS 1 and 2 messages handed to the handler and not yet acknowledged,
// so that Close can stop taking new ones, wait a bounded time for the others, and then
// hand back whatever is left.
type inflight struct {
	mu       sync.Mutex
	closing  bool
	pending  int
	idle     chan struct{} // closed when pending drops to 0 while closing
	released chan struct{} // closed when Close gives up waiting
}

func newInflight() *inflight {
	return &inflight{released: make(chan struct{})}
}

// begin registers a message about to be handed to the handler. It returns false once
// Close has started: the message must then be handed back, not delivered.
func (f *inflight) begin() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	f.pending++
	return true
}

// end unregisters a message begun earlier, acknowledged or handed back.
func (f *inflight) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending--
	if f.pending == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
}

func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending
}

// drain makes begin fail from now on, waits up to timeout for the pending messages to
// end, then closes released so that whoever still waits for an ack gives up. It returns
// how many were still pending.
func (f *inflight) drain(timeout time.Duration) int {
	f.mu.Lock()
	f.closing = true
	var idle chan struct{}
	if f.pending > 0 && timeout > 0 {
		idle = make(chan struct{})
		f.idle = idle
	}
	f.mu.Unlock()
	if idle != nil {
		t := time.NewTimer(timeout)
		select {
		case <-idle:
		case <-t.C:
		}
		t.Stop()
	}
	close(f.released)
	return f.count()
}
