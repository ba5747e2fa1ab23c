package mqtt

import (
	"cmp"
	"net"
	"slices"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
)

// Sessions of devices that went away without a clean session stay with the broker (about
// 11 KiB each, with their subscriptions and up to maxInflight queued messages) so that they
// get what was published meanwhile. A device that reconnects with new client ids would
// grow them without bound: past EmbeddedOptions.MaxSessions in all, or MaxSessionsPerHost
// from one address, the sessions whose devices went away longest ago are ended, that address's
// first, counted (Status.SessionsEvicted) and logged once a minute per address.
const (
	defaultMaxSessions        = 1024
	defaultMaxSessionsPerHost = 64
)

// persistent reports whether cl's session outlives its connection.
func persistent(cl *mochi.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// boundSessions runs when cl's session is established.
func (e *Embedded) boundSessions(cl *mochi.Client) {
	if cl.Net.Inline || !persistent(cl) {
		return
	}
	host := hostOf(cl.Net.Remote)
	var all, idle, idleHere []*mochi.Client
	here := 0
	clients := e.srv.Clients.GetAll()
	e.goneAt.Range(func(k, _ any) bool { // forget the sessions mochi expired
		if c := k.(*mochi.Client); clients[c.ID] != c {
			e.goneAt.Delete(k)
		}
		return true
	})
	for _, c := range clients {
		if c.Net.Inline || !persistent(c) {
			continue
		}
		all = append(all, c)
		sameHost := hostOf(c.Net.Remote) == host
		if sameHost {
			here++
		}
		if c.StopTime() > 0 { // gone away: the session waits for its device
			idle = append(idle, c)
			if sameHost {
				idleHere = append(idleHere, c)
			}
		}
	}
	// mochi's StopTime is in seconds: the order within one comes from goneAt.
	oldestFirst := func(a, b *mochi.Client) int { return cmp.Compare(e.goneSince(a), e.goneSince(b)) }
	slices.SortFunc(idleHere, oldestFirst)
	evicted := 0
	perHost, total := e.opts.MaxSessionsPerHost, e.opts.MaxSessions
	if e.shortOfMemory() { // no growth: each new session ends an idle one
		perHost, total = min(perHost, here-1), min(total, len(all)-1)
	}
	for ; here > perHost && len(idleHere) > 0; here-- {
		e.endSession(idleHere[0])
		idle = slices.DeleteFunc(idle, func(c *mochi.Client) bool { return c == idleHere[0] })
		idleHere = idleHere[1:]
		evicted++
	}
	slices.SortFunc(idle, oldestFirst)
	for n := len(all) - evicted; n > total && len(idle) > 0; n-- {
		e.endSession(idle[0])
		idle = idle[1:]
		evicted++
	}
	if evicted > 0 && e.access.denied.Fail("sessions "+host) {
		e.log.Warn("embedded broker: too many persistent sessions; ended those of the devices that went away longest ago (logged once a minute per address)",
			"remote", host, "ended", evicted, "max", e.opts.MaxSessions, "max_per_address", e.opts.MaxSessionsPerHost)
	}
}

func (e *Embedded) shortOfMemory() bool {
	return e.opts.ShortOfMemory != nil && e.opts.ShortOfMemory()
}

// sessions counts the persistent sessions held.
func (e *Embedded) sessions() int {
	n := 0
	for _, c := range e.srv.Clients.GetAll() {
		if !c.Net.Inline && persistent(c) {
			n++
		}
	}
	return n
}

// endSession forgets the session of a device that went away.
func (e *Embedded) endSession(cl *mochi.Client) {
	e.srv.UnsubscribeClient(cl)
	e.srv.Clients.Delete(cl.ID)
	e.goneAt.Delete(cl)
	e.sessionsEvicted.Add(1)
}

// wentAway notes when a device with a persistent session disconnected.
func (e *Embedded) wentAway(cl *mochi.Client) {
	if !cl.Net.Inline && persistent(cl) {
		e.goneAt.Store(cl, time.Now().UnixNano())
	}
}

func (e *Embedded) goneSince(cl *mochi.Client) int64 {
	if t, ok := e.goneAt.Load(cl); ok {
		return t.(int64)
	}
	return cl.StopTime() * int64(time.Second)
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
