package console

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/internal/sameorigin"
)

// Subprotocol is the websocket subprotocol the Hub selects. Browsers cannot set an
// Authorization header on a websocket, so the console offers "moongate.v1" together with
// "bearer.TOKEN"; the Hub answers with Subprotocol only, never echoing the token.
const Subprotocol = "moongate.v1"

// HubOptions configures a Hub. The zero value works: no auth, same-origin browsers only,
// no topic filter.
type HubOptions struct {
	// Authorize decides whether a request may open the stream (401 otherwise). The
	// gateway compares BearerToken(r) with its token in constant time. Nil allows all.
	Authorize func(*http.Request) bool
	// AllowedOrigins lists browser origins ("https://ops.example.com:8443") allowed
	// besides the request's own host; "*" allows any. Requests without an Origin header
	// (the CLI) are not browsers and pass this check.
	AllowedOrigins []string
	// Matcher reports whether the MQTT topic filter matches the topic; the gateway
	// passes mqtt.Match. Nil makes the topic= query a 400.
	Matcher func(filter, topic string) bool
	// MaxClients caps connected clients; past it a connection gets a 503. Zero means 32.
	MaxClients int
	// ClientBuffer is the number of messages queued per client before new ones are
	// dropped and counted. Zero means 256.
	ClientBuffer int
	// MaxRate caps the messages sent to one client per second; past it, the rest of
	// that second's messages are dropped and counted like a slow client's. Nobody reads
	// thousands of rows a second, and the cap bounds what consoles cost a busy gateway:
	// a message no client takes is never even encoded. Zero means 1000; negative means
	// no cap.
	MaxRate int
	// MaxPayload cuts event payloads and results longer than this many bytes. Zero
	// means 16 KiB.
	MaxPayload int
	// PingInterval is how often the Hub pings each client. Zero means 30 s.
	PingInterval time.Duration
	// PongWait is how long a client may stay silent (no pong, no message) before it is
	// dropped. Zero means twice PingInterval.
	PongWait time.Duration
	// WriteTimeout bounds one write to a client; a client whose TCP window stays closed
	// that long is dropped. Zero means 10 s.
	WriteTimeout time.Duration
	// Logger receives connection errors; scope it (With) before passing it. Nil means
	// slog.Default().
	Logger *slog.Logger
}

const defaultMaxPayload = 16 << 10

func (o *HubOptions) ensureDefaults() {
	if o.MaxClients <= 0 {
		o.MaxClients = 32
	}
	if o.ClientBuffer <= 0 {
		o.ClientBuffer = 256
	}
	if o.MaxRate == 0 {
		o.MaxRate = 1000
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = defaultMaxPayload
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 30 * time.Second
	}
	if o.PongWait <= 0 {
		o.PongWait = 2 * o.PingInterval
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Hub fans live messages out to websocket clients. Publish never blocks: each client has
// its own bounded queue and writer goroutine, so a stalled browser only loses its own
// messages (and is told how many) while the gateway runs on at full speed.
type Hub struct {
	opts     HubOptions
	upgrader websocket.Upgrader
	log      *slog.Logger

	// active lets Publish return at once when nobody is watching, the common case on
	// a headless gateway.
	active  atomic.Int32
	slots   atomic.Int32 // connections admitted or being upgraded, for MaxClients
	skipped atomic.Uint64

	mu      sync.RWMutex
	clients map[*client]struct{}
	closed  bool
	wg      sync.WaitGroup
	// published is the clients as Publish sees them, replaced under mu on every change:
	// a read lock per message would bounce its cache line between the cores that
	// publish.
	published atomic.Pointer[[]*client]
}

// HubStats is a snapshot for metrics.
type HubStats struct {
	Clients int    // connected clients
	Skipped uint64 // messages dropped for slow clients since start, over all clients
}

// NewHub returns a Hub; mount it (ServeHTTP) at /api/v1/live and Close it on shutdown.
func NewHub(opts HubOptions) *Hub {
	opts.ensureDefaults()
	h := &Hub{
		opts:    opts,
		log:     opts.Logger,
		clients: make(map[*client]struct{}),
	}
	h.published.Store(&[]*client{})
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		Subprotocols:     []string{Subprotocol},
		// ServeHTTP checks the origin itself to answer with a JSON error.
		CheckOrigin: func(*http.Request) bool { return true },
		// Compression would cost CPU per client on a Raspberry Pi to save LAN bytes.
		EnableCompression: false,
	}
	return h
}

// Publish sends m to every connected client whose filters accept it. It is safe for
// concurrent use, never blocks, and costs one atomic load when no client is connected.
// The message is encoded once, whatever the number of clients, and not at all when every
// client is over its rate.
func (h *Hub) Publish(m Message) {
	if h.active.Load() == 0 {
		return
	}
	typ, function, topic := m.keys()
	// The rate cap's clock is the message's own timestamp, which the gateway sets on
	// every message it publishes: a clock read per message is a measurable share of a
	// busy gateway's time on some boards and VMs.
	ts := m.timestamp()
	if ts == 0 {
		ts = time.Now().UnixMilli()
	}
	second := ts / 1000
	var data []byte
	var skipped uint64
	defer func() {
		if skipped > 0 {
			h.skipped.Add(skipped)
		}
	}()
	for _, c := range *h.published.Load() {
		if !c.filter.accepts(typ, function, topic, h.opts.Matcher) {
			continue
		}
		if !c.allow(second) {
			c.skip()
			skipped++
			continue
		}
		if data == nil {
			var err error
			if data, err = encode(m, h.opts.MaxPayload, func() time.Time { return time.UnixMilli(ts) }); err != nil {
				h.log.Warn("drop live message", logkey.Err, err)
				return
			}
		}
		if !c.offer(data) {
			skipped++
		}
	}
}

// Stats returns the number of clients and the messages skipped so far.
func (h *Hub) Stats() HubStats {
	return HubStats{Clients: int(h.active.Load()), Skipped: h.skipped.Load()}
}

// Close disconnects every client, refuses new ones, and waits for the client goroutines
// to end. A client that stopped reading gets one second to take its close frame before
// its connection is cut, so Close never waits for WriteTimeout.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	clients := make([]*client, 0, len(h.clients))
	for c := range h.clients {
		c.stop()
		clients = append(clients, c)
	}
	h.mu.Unlock()

	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		for _, c := range clients {
			c.conn.Close()
		}
		<-done
	}
}

// ServeHTTP upgrades an authorized, same-origin request to the live stream; the query
// filters are described in API_SHAPES.md.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		writeError(w, http.StatusUpgradeRequired, "the live stream is a websocket")
		return
	}
	if h.isClosed() {
		writeError(w, http.StatusServiceUnavailable, "live stream closed")
		return
	}
	if !sameorigin.Allowed(r, h.opts.AllowedOrigins) {
		writeError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	if h.opts.Authorize != nil && !h.opts.Authorize(r) {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeError(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	f, err := parseFilter(r.URL.Query(), h.opts.Matcher != nil)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if int(h.slots.Add(1)) > h.opts.MaxClients {
		h.slots.Add(-1)
		writeError(w, http.StatusServiceUnavailable, "too many live clients")
		return
	}
	defer h.slots.Add(-1)

	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has already answered the client.
		h.log.Debug("live upgrade", "remote", r.RemoteAddr, logkey.Err, err)
		return
	}
	c := newClient(conn, f, h.opts.ClientBuffer, h.opts.MaxRate)
	if !h.add(c) {
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "shutting down"),
			time.Now().Add(time.Second))
		conn.Close()
		return
	}
	defer h.remove(c)

	h.wg.Add(1) // the reader; ServeHTTP's own goroutine is the writer, counted in add
	go func() {
		defer h.wg.Done()
		c.read(h.opts.PongWait)
	}()
	if err := c.write(h.opts.PingInterval, h.opts.WriteTimeout); err != nil && !isClosing(err) {
		h.log.Debug("live client dropped", "remote", r.RemoteAddr, logkey.Err, err)
	}
}

func (h *Hub) isClosed() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.closed
}

func (h *Hub) add(c *client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.clients[c] = struct{}{}
	h.publishClients()
	h.active.Add(1)
	h.wg.Add(1)
	return true
}

// publishClients makes the current client set the one Publish sees; call it with mu held.
func (h *Hub) publishClients() {
	cs := make([]*client, 0, len(h.clients))
	for c := range h.clients {
		cs = append(cs, c)
	}
	h.published.Store(&cs)
}

func (h *Hub) remove(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.publishClients()
	h.active.Add(-1)
	h.mu.Unlock()
	h.wg.Done()
}

// BearerToken returns the token a request presents: the Authorization bearer, else a
// "bearer.TOKEN" websocket subprotocol, else the token query parameter; "" if none.
func BearerToken(r *http.Request) string {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	for _, p := range websocket.Subprotocols(r) {
		if t, ok := strings.CutPrefix(p, "bearer."); ok {
			return t
		}
	}
	return r.URL.Query().Get("token")
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

func isClosing(err error) bool {
	return errors.Is(err, websocket.ErrCloseSent) ||
		websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway)
}
