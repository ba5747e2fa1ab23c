package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/moongate/moongate/internal/connlimit"
)

// EmbeddedOptions configure an Embedded broker. The zero value is a working broker on
// port 1883 of every interface, without authentication.
type EmbeddedOptions struct {
	// Listen is the TCP address devices connect to. ":0" picks a free port; Addr tells
	// which. Zero means ":1883".
	Listen string
	// WSListen, if set, also accepts MQTT over websockets on this address (any path,
	// subprotocol "mqtt"). ":0" picks a free port; WSAddr tells which.
	WSListen string
	// WSAllowedOrigins are the browser origins, besides the listener's own, whose pages
	// may connect over websockets; "*" allows any. Connections without an Origin (not
	// a browser) are always allowed.
	WSAllowedOrigins []string
	// TLSListen, if set, also accepts MQTT over TLS on this address, with the server
	// certificate TLSCert and its key TLSKey (PEM files). With ClientCA, every device must
	// present a certificate that CA signed, and its subject's common name is its user
	// name: the ACL's %u, no password needed.
	TLSListen, TLSCert, TLSKey, ClientCA string
	// PasswordFile, when set, names the devices' users and their bcrypt password hashes
	// (see SetPassword); every device must log in as one of them. It is read again when
	// it changes and on Reload.
	PasswordFile string
	// ACLFile, when set, says what each device may publish and subscribe to, in
	// Mosquitto's acl_file format (see acl.go); what it does not grant is refused.
	ACLFile string
	// Username and Password, when Username is set and there is no PasswordFile, are
	// required of every device. With neither, any device may connect: the gateway allows
	// that only on loopback, or when the config says allow_anonymous.
	Username string
	Password string
	// MaxConnections caps the devices connected at once, and MaxConnectionsPerHost those
	// from one IP address; past them a connection is closed at once and counted. Zero
	// means 1024 and 128.
	MaxConnections        int
	MaxConnectionsPerHost int
	// MaxSessions caps the persistent sessions held, and MaxSessionsPerHost those of one
	// IP address; past them the sessions of the devices that went away longest ago end
	// (sessions.go). Zero means 1024 and 64.
	MaxSessions        int
	MaxSessionsPerHost int
	// ConnectTimeout is how long a new connection may take to send its CONNECT. Zero
	// means 10s.
	ConnectTimeout time.Duration
	// DeviceRate and DeviceByteRate are each device's fair share: publishes and payload
	// bytes a second (with a second's worth of burst). A device past them waits, its
	// connection unread, while the others go on. Zero means 2000 publishes and 1 MiB a
	// second; negative, no limit.
	DeviceRate     float64
	DeviceByteRate int
	// AckTimeout bounds how long a device's QoS 1 or 2 message waits for Message.Ack.
	// After it, the device is disconnected without an acknowledgement, so it sends the
	// message again when it reconnects. Zero means 30s.
	AckTimeout time.Duration
	// DrainTimeout is how long Close waits for the acknowledgements of messages already
	// handed to the handler before it hands them back. Zero means 1s; negative, no wait.
	DrainTimeout time.Duration
	// MaxPacketSize is the largest packet, in bytes, a device may send; a device that
	// sends a larger one is disconnected, logged (once a minute per client id, with the
	// size) and counted in Status.Oversize. Zero means 256 KiB (defaultMaxPacketSize).
	MaxPacketSize uint32
	// ShortOfMemory, if not nil, reports that the gateway is short of memory: new retained
	// messages are then delivered but not kept, and a new persistent session ends the
	// oldest idle one, so that the broker's state stops growing.
	ShortOfMemory func() bool
	// Presence, if not nil, is published Online when Start serves and Offline when Close
	// begins (see Presence).
	Presence *Presence
	// Logger receives the broker's log. mochi's own records, errors excepted, are logged
	// at Debug level. Nil discards.
	Logger *slog.Logger
}

// LogValue logs the options with the password redacted.
func (o EmbeddedOptions) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("listen", o.Listen),
		slog.String("ws_listen", o.WSListen),
		slog.String("username", o.Username),
		slog.String("password", hideSecret(o.Password)),
	)
}

func hideSecret(secret string) string {
	if secret == "" {
		return ""
	}
	return "REDACTED"
}

// Embedded is a Bus on an MQTT broker that runs in the process (mochi-mqtt). Devices
// connect to it over TCP (and websockets); the gateway subscribes and publishes in-process,
// without a socket.
//
// A device's QoS 1 or 2 message that matches a subscription is handed to the handler and
// the device gets its PUBACK (PUBREC) only after Message.Ack: the broker holds the
// message on the device's connection until then (later messages of that connection wait
// behind it, in order), and forwards it to the other subscribers after the ack too.
type Embedded struct {
	opts EmbeddedOptions
	log  *slog.Logger
	srv  *mochi.Server
	// gatewayClient publishes the gateway's messages: mochi's inline client, which its
	// Publish uses, takes no properties, and a chain (chain.go) travels as one.
	gatewayClient *mochi.Client
	tcp           *tcpListener
	tlsLn         *tcpListener // nil without TLSListen
	ws            *wsListener
	subs          subscriptions
	handler       atomic.Pointer[handlerRef]
	inflight      *inflight

	started   atomic.Bool
	stopping  atomic.Bool // Close has begun: nothing more goes to the handler
	closed    atomic.Bool // the broker is closed
	closeOnce sync.Once
	closeErr  error

	// processing holds the clients whose QoS 1 or 2 message is between begin and the end
	// of mochi's processing. A connection processes one packet at a time.
	processing sync.Map // *mochi.Client -> struct{}

	access   *access
	conns    *connlimit.Limiter
	devices  sync.Map // *mochi.Client -> *deviceState, while connected
	retained retainedIndex
	// watch is the goroutine that reloads the device files; Close stops and waits for it.
	stopWatch context.CancelFunc
	watchDone chan struct{}

	received, acked, published, refused, oversize atomic.Uint64
	authFailures, loginsThrottled, aclDenied      atomic.Uint64
	retainRefused                                 atomic.Uint64
	sessionsEvicted                               atomic.Uint64
	goneAt                                        sync.Map // *mochi.Client -> UnixNano it disconnected: persistent sessions only
	oversizeLog                                   oversizeLog
	deviceFilters                                 deviceFilters
	// presenceSent, while Close says offline, is told of each presence message written
	// to a device (sayOffline).
	presenceSent atomic.Pointer[chan struct{}]
}

type handlerRef struct{ h Handler }

// defaultMaxPacketSize is the embedded broker's largest packet when the config sets none:
// enough for any reading or command, small enough that a board with hundreds of devices
// cannot be made to hold a packet of each in memory.
const defaultMaxPacketSize = 256 << 10

// Broker limits, chosen for a small board with tens to hundreds of devices.
const (
	// Connections: a gateway serves tens to hundreds of devices, each from its own
	// address; the caps keep one host from taking every file descriptor.
	defaultMaxConnections        = 1024
	defaultMaxConnectionsPerHost = 128
	defaultConnectTimeout        = 10 * time.Second
	// Every connection allocates a queue of this many outbound packets; mochi's 8192
	// costs 64 KiB per device.
	maxClientWritesPending = 1024
	// QoS 1 and 2 messages kept for one device that does not acknowledge them (or is
	// offline with a persistent session); the oldest beyond it are dropped and counted.
	maxInflight = 1024
	// Sessions of devices that went away without a clean session are kept for a week
	// instead of mochi's forever, so that devices that change their ids do not grow the
	// broker without bound.
	maxSessionExpiry = 7 * 24 * 3600
	// $SYS topics every 10 s instead of every second: each round reads the runtime's
	// memory statistics, which stops the world.
	sysTopicInterval = 10
)

// NewEmbedded creates the broker and binds its listeners; devices can connect only once
// Start has subscribed the initial filters.
func NewEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	if opts.Listen == "" {
		opts.Listen = ":1883"
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 30 * time.Second
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = time.Second
	}
	if opts.MaxPacketSize == 0 {
		opts.MaxPacketSize = defaultMaxPacketSize
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = defaultMaxConnections
	}
	if opts.MaxConnectionsPerHost == 0 {
		opts.MaxConnectionsPerHost = defaultMaxConnectionsPerHost
	}
	if opts.MaxSessions == 0 {
		opts.MaxSessions = defaultMaxSessions
	}
	if opts.MaxSessionsPerHost == 0 {
		opts.MaxSessionsPerHost = defaultMaxSessionsPerHost
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = defaultConnectTimeout
	}
	if opts.DeviceRate == 0 {
		opts.DeviceRate = defaultDeviceRate
	}
	if opts.DeviceByteRate == 0 {
		opts.DeviceByteRate = defaultDeviceByteRate
	}
	if err := opts.Presence.valid(); err != nil {
		return nil, fmt.Errorf("embedded broker: presence: %w", err)
	}
	acc, err := newAccess(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	e := &Embedded{
		opts:     opts,
		log:      loggerOrDiscard(opts.Logger),
		inflight: newInflight(),
		access:   acc,
		conns:    &connlimit.Limiter{Max: opts.MaxConnections, PerHost: opts.MaxConnectionsPerHost},
	}

	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = opts.MaxPacketSize
	caps.MaximumClientWritesPending = maxClientWritesPending
	caps.MaximumInflight = maxInflight
	caps.MaximumSessionExpiryInterval = maxSessionExpiry
	e.srv = mochi.New(&mochi.Options{
		Capabilities:           caps,
		InlineClient:           true,
		SysTopicResendInterval: sysTopicInterval,
		Logger:                 slog.New(demoteHandler{e.log.Handler()}).With("component", "mochi"),
	})
	e.gatewayClient = e.srv.NewClient(nil, mochi.LocalListener, mochi.InlineClientId, true)
	if err := e.srv.AddHook(&embeddedHook{e: e}, nil); err != nil {
		return nil, fmt.Errorf("embedded broker: add hook: %w", err)
	}
	e.tcp = newTCPListener("tcp", opts.Listen, e.conns, opts.ConnectTimeout, e.closeClients, opts.MaxPacketSize)
	if err := e.srv.AddListener(e.tcp); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err) // net.Listen's error names the address
	}
	if opts.TLSListen != "" {
		cfg, err := serverTLS(opts.TLSCert, opts.TLSKey, opts.ClientCA)
		if err != nil {
			_ = e.srv.Close()
			return nil, fmt.Errorf("embedded broker: tls listener: %w", err)
		}
		e.tlsLn = newTCPListener("tls", opts.TLSListen, e.conns, opts.ConnectTimeout, e.closeClients, opts.MaxPacketSize)
		e.tlsLn.tls = cfg
		if err := e.srv.AddListener(e.tlsLn); err != nil {
			_ = e.srv.Close()
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
	}
	if opts.WSListen != "" {
		e.ws = newWSListener("ws", opts.WSListen, opts.WSAllowedOrigins, e.conns, opts.ConnectTimeout, e.closeClients, opts.MaxPacketSize)
		if err := e.srv.AddListener(e.ws); err != nil {
			_ = e.srv.Close()
			return nil, fmt.Errorf("embedded broker: websocket: %w", err)
		}
	}
	return e, nil
}

// Addr is the TCP address the broker listens on, with the port it bound.
func (e *Embedded) Addr() string { return e.tcp.Address() }

// WSAddr is the websocket address the broker listens on, or "" without one.
func (e *Embedded) WSAddr() string {
	if e.ws == nil {
		return ""
	}
	return e.ws.Address()
}

// TLSAddr is the TLS address the broker listens on, or "" without one.
func (e *Embedded) TLSAddr() string {
	if e.tlsLn == nil {
		return ""
	}
	return e.tlsLn.Address()
}

func (e *Embedded) brokerURLs() string {
	u := "tcp://" + e.Addr()
	if e.tlsLn != nil {
		u += " ssl://" + e.TLSAddr()
	}
	if e.ws != nil {
		u += " ws://" + e.WSAddr()
	}
	return u
}

// Start implements Bus.
func (e *Embedded) Start(ctx context.Context, subs []Subscription, h Handler) error {
	if h == nil {
		return errors.New("mqtt: start: nil handler")
	}
	for _, s := range subs {
		if err := s.validate(); err != nil {
			return fmt.Errorf("start: %w", err)
		}
	}
	if e.stopping.Load() {
		return ErrClosed
	}
	if !e.started.CompareAndSwap(false, true) {
		return errStarted
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	e.subs.add(subs...)
	e.handler.Store(&handlerRef{h})
	for _, s := range subs {
		e.deliverRetained(h, s)
	}
	// Retained before any device can connect, so none reads a stale state.
	if p := e.opts.Presence; p != nil {
		if err := e.Publish(ctx, p.Topic, p.Online, 1, true); err != nil {
			return fmt.Errorf("embedded broker: presence: %w", err)
		}
	}
	// Only now do the listeners accept connections: a device cannot publish before the
	// subscriptions that must see its messages exist.
	if err := e.srv.Serve(); err != nil {
		return fmt.Errorf("embedded broker: serve: %w", err)
	}
	e.log.Info("embedded broker serving", logKeyBroker, e.brokerURLs(), "subscriptions", len(subs))
	if e.opts.PasswordFile != "" || e.opts.ACLFile != "" {
		watchCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
		e.stopWatch, e.watchDone = stop, make(chan struct{})
		go func() {
			defer close(e.watchDone)
			e.watchAccess(watchCtx)
		}()
	}
	return nil
}

// Subscribe implements Bus. Before returning, it hands the retained messages that match
// s.Filter to the handler (Retain set), as a broker does for a new subscription.
func (e *Embedded) Subscribe(s Subscription) error {
	if err := s.validate(); err != nil {
		return err
	}
	if e.stopping.Load() {
		return ErrClosed
	}
	e.subs.add(s)
	if ref := e.handler.Load(); ref != nil {
		e.deliverRetained(ref.h, s)
	}
	return nil
}

// Unsubscribe implements Bus.
func (e *Embedded) Unsubscribe(filter string) error {
	if e.stopping.Load() {
		return ErrClosed
	}
	e.subs.remove(filter)
	return nil
}

// Publish implements Bus. The message goes to the devices and, when it matches a
// subscription, to the handler too (within this call, never waiting for Ack). It is
// allowed while Close drains, so that invocations finishing then can publish.
func (e *Embedded) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	if err := ValidTopic(topic); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if qos > 2 {
		return fmt.Errorf("publish %s: QoS %d is not 0, 1 or 2", topic, qos)
	}
	if e.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    uint16(qos), // as mochi's Publish: inbound QoS needs a packet id to pass its checks
	}
	if chain := chainFrom(ctx); len(chain) > 0 {
		pk.Properties.User = []packets.UserProperty{{Key: chainProperty, Val: strings.Join(chain, ",")}}
	}
	if err := e.srv.InjectPacket(e.gatewayClient, pk); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	e.published.Add(1)
	return nil
}

// Status implements Bus.
func (e *Embedded) Status() Status {
	st := Status{
		State:     StateNew,
		Broker:    e.brokerURLs(),
		Clients:   int(atomic.LoadInt64(&e.srv.Info.ClientsConnected)),
		Received:  e.received.Load(),
		Acked:     e.acked.Load(),
		Pending:   e.inflight.count(),
		Published: e.published.Load(),
		Refused:   e.refused.Load(),
		Oversize:  e.oversize.Load(),

		AuthFailures:       e.authFailures.Load(),
		LoginsThrottled:    e.loginsThrottled.Load(),
		ACLDenied:          e.aclDenied.Load(),
		ConnectionsRefused: e.conns.Refused(),
		RetainRefused:      e.retainRefused.Load(),
		Sessions:           e.sessions(),
		SessionsEvicted:    e.sessionsEvicted.Load(),
	}
	switch {
	case e.closed.Load():
		st.State = StateClosed
	case e.stopping.Load():
		st.State = StateClosing
	case e.started.Load():
		st.State = StateServing
	}
	return st
}

// Close implements Bus: devices whose messages are still waiting for Ack after
// DrainTimeout are disconnected without an acknowledgement, then the broker closes.
func (e *Embedded) Close() error {
	e.closeOnce.Do(func() {
		e.stopping.Store(true)
		if e.stopWatch != nil {
			e.stopWatch()
			<-e.watchDone
		}
		if left := e.inflight.drain(e.opts.DrainTimeout); left > 0 {
			e.log.Info("embedded broker: handing back unacknowledged messages", "count", left)
		}
		if p := e.opts.Presence; p != nil && e.started.Load() {
			e.sayOffline(p)
		}
		e.closeErr = e.srv.Close()
		e.closed.Store(true)
	})
	return e.closeErr
}

// closeClients disconnects the clients of one listener as the broker closes. It is
// mochi's closeListenerClients without its deadlock: Clients.GetByListener (v2.7.9) takes
// the read lock twice, and a device attaching in between queues a writer that both then
// wait for forever. GetAll takes it once.
func (e *Embedded) closeClients(listener string) {
	for _, cl := range e.srv.Clients.GetAll() {
		if cl.Net.Listener == listener && !cl.Closed() {
			_ = e.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

func (e *Embedded) deliver(h Handler, m *Message) {
	e.received.Add(1)
	h.HandleMessage(m)
}

func (e *Embedded) deliverRetained(h Handler, s Subscription) {
	for _, pk := range e.srv.Topics.Messages(s.Filter) {
		if !Match(s.Filter, pk.TopicName) { // mochi's index is the source; our rules decide
			continue
		}
		e.deliver(h, &Message{Topic: pk.TopicName, Payload: pk.Payload, QoS: min(pk.FixedHeader.Qos, s.QoS), Retain: true})
	}
}

// onPublish runs in mochi's OnPublish hook, on the publishing connection's goroutine,
// before mochi acknowledges the message and forwards it. Returning
// packets.ErrRejectPacket makes mochi drop the message without acknowledging it.
func (e *Embedded) onPublish(cl *mochi.Client, pk packets.Packet, chain []string) error {
	ref := e.handler.Load()
	if ref == nil {
		return nil
	}
	// A device's QoS 0 reading that is not retained and that no device subscription
	// matches has nothing left for mochi to do: "ignore" skips the forwarding (and,
	// unlike a rejection, mochi's debug line, whose arguments allocate).
	var forward error
	if !cl.Net.Inline && pk.FixedHeader.Qos == 0 && !pk.FixedHeader.Retain && !e.deviceFilters.mayMatch(pk.TopicName) {
		forward = packets.CodeSuccessIgnore
	}
	subQoS, ok := e.subs.match(pk.TopicName)
	if !ok {
		return forward
	}
	qos := min(pk.FixedHeader.Qos, subQoS)
	// The gateway's own messages have nobody to acknowledge to, and waiting for them
	// could deadlock a publishing invocation.
	if cl.Net.Inline || qos == 0 {
		if !e.stopping.Load() {
			m := &Message{Topic: pk.TopicName, Payload: pk.Payload, QoS: qos, MayWait: !cl.Net.Inline, OnSenderGoroutine: !cl.Net.Inline}
			if cl.Net.Inline {
				m.Chain = chain
			}
			e.deliver(ref.h, m)
		}
		return forward
	}
	if !e.inflight.begin() {
		e.refuse(cl, pk, packets.ErrServerShuttingDown)
		return packets.ErrRejectPacket
	}
	// The message counts as pending until mochi has written the PUBACK (OnPacketProcessed),
	// so that Close does not cut the connection between the Ack and the PUBACK.
	e.processing.Store(cl, struct{}{})
	acked := make(chan struct{})
	e.deliver(ref.h, &Message{Topic: pk.TopicName, Payload: pk.Payload, QoS: qos, MayWait: true, OnSenderGoroutine: true, ack: func() { close(acked) }})
	t := time.NewTimer(e.opts.AckTimeout)
	defer t.Stop()
	select {
	case <-acked:
		e.acked.Add(1)
		return nil // mochi now writes the PUBACK and forwards the message
	case <-t.C:
		e.log.Warn("embedded broker: no ack in time, disconnecting the device so it redelivers",
			logKeyClient, cl.ID, logKeyTopic, pk.TopicName, "timeout", e.opts.AckTimeout)
		e.refuse(cl, pk, packets.ErrServerBusy)
	case <-e.inflight.released:
		e.refuse(cl, pk, packets.ErrServerShuttingDown)
	}
	return packets.ErrRejectPacket
}

// refuse disconnects a device without acknowledging its message pk: MQTT has no negative
// acknowledgement, and a device resends unacknowledged messages when it reconnects.
func (e *Embedded) refuse(cl *mochi.Client, pk packets.Packet, code packets.Code) {
	e.refused.Add(1)
	e.log.Debug("embedded broker: message handed back", logKeyClient, cl.ID, logKeyTopic, pk.TopicName, "reason", code.Reason)
	e.disconnect(cl, code)
}

// disconnect ends a device's connection, with a DISCONNECT reason for MQTT 5.
func (e *Embedded) disconnect(cl *mochi.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion == 5 {
		_ = e.srv.DisconnectClient(cl, code) // it closes the connection whatever the write gives
		return
	}
	cl.Stop(code) // MQTT 3 has no DISCONNECT from the server
}

var _ Bus = (*Embedded)(nil)
