package mqtt

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/moongate/moongate/internal/connlimit"
	"github.com/moongate/moongate/internal/sameorigin"
)

// wsListener accepts MQTT over websockets for the embedded broker. mochi has one, but it
// binds only when it starts serving, so neither a busy port nor the port picked for ":0"
// can be known when the broker is created; this one binds in Init.
type wsListener struct {
	id        string
	address   string
	ln        net.Listener
	srv       *http.Server
	log       *slog.Logger
	establish listeners.EstablishFn
	upgrader  websocket.Upgrader
	conns     conns
	// limit caps connections, shared with the TCP listener; connectTimeout bounds the
	// wait for CONNECT.
	limit          *connlimit.Limiter
	connectTimeout time.Duration
	// closeClients is used instead of the CloseFn mochi passes to Close: see
	// Embedded.closeClients.
	closeClients listeners.CloseFn
	maxPacket    uint32 // the broker's maximum packet size, for framedConn
}

func newWSListener(id, address string, allowedOrigins []string, limit *connlimit.Limiter, connectTimeout time.Duration, closeClients listeners.CloseFn, maxPacket uint32) *wsListener {
	return &wsListener{
		id:             id,
		address:        address,
		limit:          limit,
		connectTimeout: connectTimeout,
		closeClients:   closeClients,
		maxPacket:      maxPacket,
		upgrader: websocket.Upgrader{
			Subprotocols: []string{"mqtt"},
			// Any web page the user opens could otherwise subscribe to # and publish
			// through the user's browser: a browser's Origin must be the listener's own
			// or configured. Devices and tools send none.
			CheckOrigin: func(r *http.Request) bool { return sameorigin.Allowed(r, allowedOrigins) },
		},
	}
}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

func (l *wsListener) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.log = log
	l.ln = connlimit.Listen(ln, l.limit)
	l.srv = &http.Server{Handler: l, ReadHeaderTimeout: 10 * time.Second}
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("websocket listener stopped", logKeyErr, err)
	}
}

func (l *wsListener) Close(listeners.CloseFn) {
	_ = l.srv.Close() // upgraded connections are not the server's: conns ends them
	_ = l.ln.Close()  // in case Serve never ran
	l.closeClients(l.id)
	l.conns.closeAll()
}

func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered with an HTTP error
	}
	conn := &wsConn{Conn: c.NetConn(), ws: c}
	if !l.conns.add(conn) {
		return
	}
	_ = conn.SetDeadline(time.Now().Add(l.connectTimeout)) // mochi sets the keepalive's after CONNECT
	defer l.conns.done(conn)
	defer c.Close()
	if err := l.establish(l.id, newFramedConn(conn, l.maxPacket)); err != nil {
		l.log.Debug("websocket client ended", logKeyErr, err)
	}
}

// wsConn is an MQTT byte stream over websocket binary messages. The embedded net.Conn
// is the underlying connection: mochi sets its deadlines and reads its addresses.
type wsConn struct {
	net.Conn
	ws *websocket.Conn
	r  io.Reader // the message being read, nil between messages
}

var errWSNotBinary = errors.New("websocket message is not binary")

// Read reads across message boundaries: MQTT packets may span websocket messages.
func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errWSNotBinary
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message; mochi serialises its writes per connection.
func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.ws.Close() }
