// Package connlimit caps the connections a server keeps open, in all and per source
// address, so that one host on the LAN cannot take every file descriptor of the gateway:
// past a cap, a new connection is closed at once and counted, and the connections already
// open are not disturbed.
package connlimit

import (
	"net"
	"sync"
	"sync/atomic"
)

// Limiter counts open connections. The zero value has no caps.
type Limiter struct {
	// Max caps the connections open at once; zero means no cap.
	Max int
	// PerHost caps the connections open at once from one IP address; zero means no cap.
	PerHost int

	mu      sync.Mutex
	total   int
	perHost map[string]int
	refused atomic.Uint64
}

// Acquire takes a place for a connection from addr. When ok, release gives it back and
// must be called once, when the connection closes.
func (l *Limiter) Acquire(addr net.Addr) (release func(), ok bool) {
	host := hostOf(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.Max > 0 && l.total >= l.Max) || (l.PerHost > 0 && l.perHost[host] >= l.PerHost) {
		l.refused.Add(1)
		return nil, false
	}
	if l.perHost == nil {
		l.perHost = make(map[string]int)
	}
	l.total++
	l.perHost[host]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.perHost[host]--; l.perHost[host] <= 0 {
				delete(l.perHost, host)
			}
		})
	}, true
}

// Open is the number of connections open now.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Refused counts the connections closed at once because a cap was reached.
func (l *Limiter) Refused() uint64 { return l.refused.Load() }

func hostOf(addr net.Addr) string {
	if a, ok := addr.(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// Listen wraps ln: Accept closes the connections past l's caps and returns the others,
// whose Close gives their place back.
func Listen(ln net.Listener, l *Limiter) net.Listener { return &listener{Listener: ln, l: l} }

type listener struct {
	net.Listener
	l *Limiter
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, ok := ln.l.Acquire(c.RemoteAddr())
		if !ok {
			c.Close()
			continue
		}
		return &conn{Conn: c, release: release}, nil
	}
}

type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
