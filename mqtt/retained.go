package mqtt

import "sync"

// retainedIndex bounds what devices may leave retained on the broker: every retained
// message stays in memory until a device clears it, so without a bound a device could
// fill the heap (20k retained messages of 2 KB took it to 166 MiB, past the memory limit,
// and the collector then ran without end). It mirrors mochi's retained store for device
// publishes: topic -> size and owner.
type retainedIndex struct {
	mu       sync.Mutex
	topics   map[string]retainedEntry
	bytes    int
	byClient map[string]int
}

type retainedEntry struct {
	size   int
	client string
}

// Bounds on retained messages from devices.
const (
	maxRetained          = 10000
	maxRetainedBytes     = 16 << 20
	maxRetainedPerClient = 1000
)

// admit records a device's retained publish of n payload bytes on topic, or refuses it
// when it would pass a bound. An empty payload clears the topic and is always admitted.
func (r *retainedIndex) admit(client, topic string, n int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.topics == nil {
		r.topics, r.byClient = map[string]retainedEntry{}, map[string]int{}
	}
	old, had := r.topics[topic]
	if n == 0 {
		if had {
			r.forget(topic, old)
		}
		return true
	}
	grow := n
	if had {
		grow -= old.size
	}
	switch {
	case r.bytes+grow > maxRetainedBytes,
		!had && len(r.topics) >= maxRetained,
		(!had || old.client != client) && r.byClient[client] >= maxRetainedPerClient:
		return false
	}
	if had {
		r.forget(topic, old)
	}
	r.topics[topic] = retainedEntry{size: n, client: client}
	r.bytes += n
	r.byClient[client]++
	return true
}

func (r *retainedIndex) forget(topic string, e retainedEntry) {
	delete(r.topics, topic)
	r.bytes -= e.size
	if r.byClient[e.client]--; r.byClient[e.client] <= 0 {
		delete(r.byClient, e.client)
	}
}
