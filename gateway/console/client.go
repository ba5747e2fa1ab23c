package console

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// markerDelay is how long a skipped count for the rate cap may wait for a frame to carry
// it before the writer sends it alone.
const markerDelay = time.Second

// frame is one queued message and the number of messages dropped just before it, so
// that the "skipped" marker lands where the gap is.
type frame struct {
	data    []byte
	skipped int64
}

// client is one websocket connection. Publishers only touch queue, pending and wake; the
// writer goroutine (in Hub.ServeHTTP) owns all data writes; the reader goroutine only
// reads control frames.
type client struct {
	conn   *websocket.Conn
	filter filter
	queue  chan frame
	// pending counts messages dropped since the last frame that got through; the next
	// frame or, once the queue is drained, the writer reports them.
	pending  atomic.Int64
	wake     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	// The rate cap counts messages per wall-clock second: the first maxRate of a second
	// go out, the rest are skipped. Whole runs of messages and at most a marker or two
	// per second read better in a table than one marker between every two rows, which a
	// smooth token bucket would produce under a steady overload.
	maxRate int64 // <= 0: no cap
	second  atomic.Int64
	sent    atomic.Int64
}

func newClient(conn *websocket.Conn, f filter, buffer, maxRate int) *client {
	return &client{
		conn:    conn,
		filter:  f,
		queue:   make(chan frame, buffer),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		maxRate: int64(maxRate),
	}
}

// allow reports whether the client may take one more message in the given second. Two
// publishers crossing into a new second together may both reset the count: the cap is
// approximate by a message or two, never unbounded.
func (c *client) allow(second int64) bool {
	if c.maxRate <= 0 {
		return true
	}
	if c.second.Load() != second {
		c.second.Store(second)
		c.sent.Store(0)
	} else if c.sent.Load() >= c.maxRate {
		return false // over: no write, so publishers on other cores keep the line shared
	}
	return c.sent.Add(1) <= c.maxRate
}

// skip counts a message dropped for the rate cap. The writer is not woken: the count
// rides on the next frame that gets through, where the gap is, or goes out with the
// writer's next idle flush.
func (c *client) skip() { c.pending.Add(1) }

// offer queues data without blocking; it reports false when the queue was full and the
// message was dropped and counted.
func (c *client) offer(data []byte) bool {
	// The swap hands the count to this frame; if the frame does not get in, the count
	// goes back, so concurrent publishers can neither lose nor double it.
	skipped := c.pending.Swap(0)
	select {
	case c.queue <- frame{data: data, skipped: skipped}:
		return true
	default:
		c.pending.Add(skipped + 1)
		// The writer may have drained the queue between our failed send and the Add;
		// wake it so the marker does not wait for the next message.
		select {
		case c.wake <- struct{}{}:
		default:
		}
		return false
	}
}

// stop asks the writer to close the connection; safe to call more than once.
func (c *client) stop() { c.stopOnce.Do(func() { close(c.done) }) }

// read consumes what the client sends, which is only control frames in practice: the
// pong handler keeps the connection alive. It returns when the connection fails, closes,
// or stays silent for pongWait, and then stops the writer.
func (c *client) read(pongWait time.Duration) {
	defer c.stop()
	c.conn.SetReadLimit(4 << 10)
	_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(pongWait))
	})
	for {
		if _, _, err := c.conn.NextReader(); err != nil {
			return
		}
	}
}

// write sends queued frames, skipped markers and pings until the client goes away or
// the hub stops it; it closes the connection on return.
func (c *client) write(pingInterval, writeTimeout time.Duration) error {
	defer c.conn.Close()
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	// A stream that stops while over the rate cap still gets its last marker.
	idle := time.NewTicker(markerDelay)
	defer idle.Stop()
	for {
		select {
		case f := <-c.queue:
			if f.skipped > 0 {
				if err := c.send(skippedJSON(f.skipped, time.Now().UnixMilli()), writeTimeout); err != nil {
					return err
				}
			}
			if err := c.send(f.data, writeTimeout); err != nil {
				return err
			}
			if err := c.flushSkipped(writeTimeout); err != nil {
				return err
			}
		case <-c.wake:
			if err := c.flushSkipped(writeTimeout); err != nil {
				return err
			}
		case <-idle.C:
			if err := c.flushSkipped(writeTimeout); err != nil {
				return err
			}
		case <-ping.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				return err
			}
		case <-c.done:
			msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "")
			_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			return nil
		}
	}
}

// flushSkipped reports dropped messages once the queue is empty: with frames still
// queued, the count belongs after them.
func (c *client) flushSkipped(writeTimeout time.Duration) error {
	if len(c.queue) > 0 {
		return nil
	}
	n := c.pending.Swap(0)
	if n == 0 {
		return nil
	}
	return c.send(skippedJSON(n, time.Now().UnixMilli()), writeTimeout)
}

func (c *client) send(data []byte, writeTimeout time.Duration) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	return c.conn.WriteMessage(websocket.TextMessage, data)
}
