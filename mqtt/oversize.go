package mqtt

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// framedConn follows the MQTT framing of what a device sends, without copying or decoding
// anything, so that the packet mochi refuses as too large (from its fixed header alone,
// before reading it) can be reported with its size. It costs a few steps per packet: the
// body of a packet is skipped by counting.
type framedConn struct {
	net.Conn
	max uint32 // the broker's maximum packet size

	// Read runs on the connection's one reading goroutine; the fields below are its own.
	body       int  // bytes of the current packet's body still to come
	inLength   bool // reading the remaining-length bytes of a fixed header
	lenBytes   int
	length     int
	multiplier int

	oversize atomic.Int64 // total size of the first packet larger than max, 0 if none
	deadline atomic.Int64 // UnixNano of the last deadline SetDeadline passed on, 0 if none
}

func newFramedConn(c net.Conn, max uint32) *framedConn {
	return &framedConn{Conn: c, max: max}
}

func (c *framedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for i := 0; i < n; {
		switch {
		case c.body > 0:
			skip := min(c.body, n-i)
			c.body -= skip
			i += skip
		case !c.inLength: // the packet type byte
			c.inLength, c.lenBytes, c.length, c.multiplier = true, 0, 0, 1
			i++
		default: // a remaining-length byte: 7 bits each, least significant first
			b := int(p[i])
			i++
			c.length += (b & 0x7f) * c.multiplier
			c.multiplier *= 128
			c.lenBytes++
			if b&0x80 != 0 && c.lenBytes < 4 {
				continue
			}
			c.inLength, c.body = false, c.length
			// mochi's own test (clients.go ReadFixedHeader): remaining length + 1 > max.
			if uint32(c.length+1) > c.max && c.oversize.Load() == 0 {
				c.oversize.Store(int64(1 + c.lenBytes + c.length))
			}
		}
	}
	return n, err
}

// oversizeLog says, at most once a minute per client id, that a device's packet was
// refused as too large: a device that retries the same message would otherwise fill the
// log.
type oversizeLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due reports whether a refusal of id's packet at now should be logged, and notes it.
func (l *oversizeLog) due(id string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[id]; ok && now.Sub(t) < time.Minute {
		return false
	}
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	// Forget the ids whose minute is over, so that devices that come and go do not
	// grow the map.
	for k, t := range l.last {
		if now.Sub(t) >= time.Minute {
			delete(l.last, k)
		}
	}
	l.last[id] = now
	return true
}
