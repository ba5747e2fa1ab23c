// Package throttle slows down credential guessing: it counts failed attempts per source
// address, and past a number of them in a window refuses that source until the window
// ends. The console's tokens and the broker's device passwords share it.
package throttle

import (
	"sync"
	"time"
)

// Failures counts failed attempts per source. The zero value is not usable: use New.
type Failures struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	now    func() time.Time
	byHost map[string]*window
}

type window struct {
	since  time.Time
	count  int
	logged bool
}

// maxSources bounds the memory a flood of source addresses can take: past it, the
// tracked windows are forgotten.
const maxSources = 4096

// New allows max failures per source in each window.
func New(max int, per time.Duration) *Failures {
	return &Failures{max: max, window: per, now: time.Now, byHost: map[string]*window{}}
}

// Blocked reports whether host has used up its failures for the current window.
func (f *Failures) Blocked(host string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.current(host)
	return w != nil && w.count >= f.max
}

// Fail counts one failure from host. first reports the first failure of its window: log
// that one, not every attempt.
func (f *Failures) Fail(host string) (first bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.current(host)
	if w == nil {
		if len(f.byHost) >= maxSources {
			clear(f.byHost)
		}
		w = &window{since: f.now()}
		f.byHost[host] = w
	}
	w.count++
	first, w.logged = !w.logged, true
	return first
}

func (f *Failures) current(host string) *window {
	w := f.byHost[host]
	if w != nil && f.now().Sub(w.since) >= f.window {
		delete(f.byHost, host)
		return nil
	}
	return w
}
