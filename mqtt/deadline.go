package mqtt

import "time"

// deadlineSlack is the fraction of the keepalive span by which a deadline may move
// later before SetDeadline passes it on.
const deadlineSlack = 8

// SetDeadline passes on mochi's keepalive deadline, which mochi refreshes before every
// packet it reads, only once it has moved later by an eighth of its span: each refresh
// re-arms two runtime timers, a few percent of the gateway's CPU at full speed. A
// silent connection is then cut up to an eighth of mochi's span (1.5 keepalives) early:
// still more than the one keepalive within which a device must send something. An
// earlier deadline, or none, is passed on at once.
func (c *framedConn) SetDeadline(t time.Time) error {
	if t.IsZero() {
		c.deadline.Store(0)
		return c.Conn.SetDeadline(t)
	}
	next := t.UnixNano()
	if last := c.deadline.Load(); last != 0 && next >= last && next-last < (next-time.Now().UnixNano())/deadlineSlack {
		return nil
	}
	c.deadline.Store(next)
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline and SetWriteDeadline set one deadline of the two: the next
// SetDeadline passes its own on.
func (c *framedConn) SetReadDeadline(t time.Time) error {
	c.deadline.Store(0)
	return c.Conn.SetReadDeadline(t)
}

func (c *framedConn) SetWriteDeadline(t time.Time) error {
	c.deadline.Store(0)
	return c.Conn.SetWriteDeadline(t)
}
