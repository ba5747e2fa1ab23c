package mqtt

import (
	"maps"
	"sync"
	"sync/atomic"
)

// subscriptions is the gateway's set of filters. Writes are rare (deploys) and copy the
// map; reads (one per message) load the current copy without locking.
type subscriptions struct {
	mu  sync.Mutex // serialises writers
	cur atomic.Pointer[map[string]byte]
}

func (s *subscriptions) load() map[string]byte {
	if m := s.cur.Load(); m != nil {
		return *m
	}
	return nil
}

func (s *subscriptions) add(subs ...Subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := maps.Clone(s.load())
	if m == nil {
		m = make(map[string]byte, len(subs))
	}
	for _, sub := range subs {
		m[sub.Filter] = sub.QoS
	}
	s.cur.Store(&m)
}

// remove deletes filter and reports whether it was there.
func (s *subscriptions) remove(filter string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.load()[filter]; !ok {
		return false
	}
	m := maps.Clone(s.load())
	delete(m, filter)
	s.cur.Store(&m)
	return true
}

// match reports whether any filter matches topic, and the highest QoS among those that do.
func (s *subscriptions) match(topic string) (qos byte, ok bool) {
	for f, q := range s.load() {
		if Match(f, topic) {
			ok = true
			qos = max(qos, q)
		}
	}
	return qos, ok
}
