package mqtt

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// maxScannedFilters is the most distinct device filters deviceFilters checks a topic
// against one by one; past it every reading takes mochi's forwarding, whose topic tree
// is the better index for many filters.
const maxScannedFilters = 64

// deviceFilters is the set of filters devices have subscribed to, so that a device's
// QoS 0 reading that no device subscription can match skips mochi's forwarding: its
// topic-tree walk allocates on every message, and took a tenth of the gateway's CPU at
// full speed with nobody subscribed to the readings (issue 12).
//
// It may err one way only: a filter nobody holds any more may stay in the set (one
// refused by the ACL, a clean session that took another over), which costs a lookup; a
// filter somebody holds is never missing from it, which would lose their messages.
// Filters are held per client id, as mochi's index holds them, so that one client's
// UNSUBSCRIBE never takes another's filter out. They are added in OnSubscribed, after
// mochi has added them to its index, so a reading published after a SUBACK is always
// forwarded.
type deviceFilters struct {
	mu     sync.Mutex                 // serialises writers
	held   map[string]map[string]bool // client id -> the filters it subscribed
	counts map[string]int             // topic filter -> subscriptions to it
	cur    atomic.Pointer[filterSnapshot]
}

// filterSnapshot is what readers load: the distinct filters, or all when there are too
// many to scan.
type filterSnapshot struct {
	filters []string
	all     bool
}

// add records the filters of client's SUBSCRIBE, whatever their reason codes: a
// refused one recorded costs a lookup, never a message.
func (f *deviceFilters) add(client string, subs []packets.Subscription) {
	f.update(client, subs, true)
}

// remove forgets the filters of client's UNSUBSCRIBE, or of a session mochi ended.
func (f *deviceFilters) remove(client string, subs []packets.Subscription) {
	f.update(client, subs, false)
}

func (f *deviceFilters) update(client string, subs []packets.Subscription, hold bool) {
	if len(subs) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held == nil {
		f.held, f.counts = map[string]map[string]bool{}, map[string]int{}
	}
	mine := f.held[client]
	for _, s := range subs {
		// Held as subscribed ($share/a/t and t are two subscriptions), matched as the
		// topic filter.
		filter := unshared(s.Filter)
		switch {
		case hold && !mine[s.Filter]:
			if mine == nil {
				mine = map[string]bool{}
				f.held[client] = mine
			}
			mine[s.Filter] = true
			f.counts[filter]++
		case !hold && mine[s.Filter]:
			delete(mine, s.Filter)
			if f.counts[filter]--; f.counts[filter] == 0 {
				delete(f.counts, filter)
			}
		}
	}
	if len(mine) == 0 {
		delete(f.held, client)
	}
	snap := &filterSnapshot{all: len(f.counts) > maxScannedFilters}
	if !snap.all {
		for filter := range f.counts {
			snap.filters = append(snap.filters, filter)
		}
	}
	f.cur.Store(snap)
}

// mayMatch reports whether a device subscription may match topic.
func (f *deviceFilters) mayMatch(topic string) bool {
	snap := f.cur.Load()
	if snap == nil {
		return false
	}
	if snap.all {
		return true
	}
	for _, filter := range snap.filters {
		if Match(filter, topic) {
			return true
		}
	}
	return false
}

// unshared is the topic filter of a shared subscription ($share/GROUP/FILTER), or filter.
func unshared(filter string) string {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if _, f, ok := strings.Cut(rest, "/"); ok {
			return f
		}
	}
	return filter
}
