package mqtt

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/moongate/moongate/internal/connlimit"
)

// conns tracks the connections a listener hands to mochi, so that closing the listener
// ends all of them and waits until mochi is done with each. mochi's own listeners start
// a connection on a goroutine that registers with the server's WaitGroup only once
// running: one accepted just as the broker closes escapes Close and lives on.
type conns struct {
	mu     sync.Mutex
	closed bool
	open   map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// add registers c, or closes it and returns false once the listener is closed.
func (t *conns) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return false
	}
	if t.open == nil {
		t.open = make(map[net.Conn]struct{})
	}
	t.open[c] = struct{}{}
	t.wg.Add(1)
	return true
}

func (t *conns) done(c net.Conn) {
	t.mu.Lock()
	delete(t.open, c)
	t.mu.Unlock()
	t.wg.Done()
}

// closeAll refuses new connections, closes the open ones and waits for their handlers.
func (t *conns) closeAll() {
	t.mu.Lock()
	t.closed = true
	for c := range t.open {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// tcpListener is mochi's TCP listener with conns: it binds in Init, so that NewEmbedded
// reports a busy port and knows the port picked for ":0".
type tcpListener struct {
	id             string
	address        string
	ln             net.Listener
	log            *slog.Logger
	conns          conns
	limit          *connlimit.Limiter
	connectTimeout time.Duration     // for the CONNECT; mochi sets the keepalive deadline after it
	closeClients   listeners.CloseFn // used instead of the one mochi passes to Close
	maxPacket      uint32            // the broker's maximum packet size, for framedConn
	tls            *tls.Config       // nil: plain TCP
}

func newTCPListener(id, address string, limit *connlimit.Limiter, connectTimeout time.Duration, closeClients listeners.CloseFn, maxPacket uint32) *tcpListener {
	return &tcpListener{id: id, address: address, limit: limit, connectTimeout: connectTimeout, closeClients: closeClients, maxPacket: maxPacket}
}

func (l *tcpListener) ID() string { return l.id }
func (l *tcpListener) Protocol() string {
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}

func (l *tcpListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

func (l *tcpListener) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls) // the handshake runs at the first read, within the CONNECT deadline
	}
	l.log, l.ln = log, ln
	return nil
}

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	for {
		c, err := l.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of file descriptors, say: wait for some to free up
			l.log.Warn("tcp listener: accept", logKeyErr, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		release, ok := l.limit.Acquire(c.RemoteAddr())
		if !ok {
			c.Close()
			continue
		}
		if !l.conns.add(c) {
			release()
			return
		}
		_ = c.SetDeadline(time.Now().Add(l.connectTimeout))
		go func() {
			defer release()
			defer l.conns.done(c)
			if err := establish(l.id, newFramedConn(c, l.maxPacket)); err != nil {
				l.log.Debug("client ended", logKeyErr, err)
			}
		}()
	}
}

// Close ignores mochi's CloseFn for l.closeClients: see Embedded.closeClients.
func (l *tcpListener) Close(listeners.CloseFn) {
	_ = l.ln.Close()
	l.closeClients(l.id) // DISCONNECT to the v5 clients, while their connections are open
	l.conns.closeAll()
}
