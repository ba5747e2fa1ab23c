package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/moongate/moongate/internal/redact"
	"github.com/moongate/moongate/internal/tlsfiles"
)

// TLSFiles names the PEM files for a TLS connection to a broker (see tlsfiles).
type TLSFiles = tlsfiles.Files

// ClientOptions configure a Client. Broker is required; the other zero values work.
type ClientOptions struct {
	// Broker is the URL of the broker: tcp://host:1883, ssl://host:8883, ws://host/mqtt
	// or wss://host/mqtt (mqtt:// and mqtts:// are accepted for tcp:// and ssl://).
	Broker string
	// Failover are more URLs of the same broker cluster, tried in turn after Broker on
	// every connection attempt: when the node in use goes away, the client reconnects to
	// the next that answers. They take the same TLS files, so all use TLS or none do.
	Failover []string
	// ClientID identifies the gateway's session on the broker. It must stay the same
	// across restarts, or the persistent session and the messages it queued while the
	// gateway was away are lost: derive it from the gateway id. Zero means
	// "moongate-" + the host name.
	ClientID string
	Username string
	Password string // logged as REDACTED (see LogValue)
	// TLS files, for ssl:// and wss:// brokers.
	TLS TLSFiles
	// CleanSession, if true, gives up the persistent session: the broker then forgets the
	// subscriptions and drops the messages that arrive while the gateway is disconnected.
	// Zero (false) keeps the session, which the at-least-once guarantee needs.
	CleanSession bool
	// KeepAlive is the MQTT keep-alive interval. Zero means 30s.
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt, TLS and CONNACK included. Zero means 10s.
	ConnectTimeout time.Duration
	// MaxReconnectInterval caps the growing wait between connection attempts. Zero means 30s.
	MaxReconnectInterval time.Duration
	// DrainTimeout is how long Close waits for the acknowledgements of messages already
	// handed to the handler; the broker redelivers the others on the next connection.
	// Zero means 1s; negative, no wait.
	DrainTimeout time.Duration
	// Presence, if not nil, is the publishing connection's last will (Offline), published
	// Online on each of its connections and Offline by Close (see Presence).
	Presence *Presence
	// Logger receives connection events. Nil discards.
	Logger *slog.Logger
}

// LogValue logs the options with the password redacted.
func (o ClientOptions) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("broker", redact.URL(o.Broker)),
		slog.String("client_id", o.ClientID),
		slog.String("username", o.Username),
		slog.String("password", hideSecret(o.Password)),
		slog.String("tls_ca", o.TLS.CA),
		slog.String("tls_cert", o.TLS.Cert),
		slog.Bool("clean_session", o.CleanSession),
	)
}

// Client is a Bus on an external broker (paho.mqtt.golang). It keeps a persistent session
// with a stable client id, reconnects by itself and subscribes again on every connection,
// and acknowledges a QoS 1 or 2 message to the broker only after Message.Ack. Messages
// reach the handler one at a time, in the order the broker sends them.
//
// The gateway publishes on a second connection (client id + "-pub"). paho reads the
// acknowledgements of a connection's publishes on the goroutine that delivers its
// messages, so with one connection a handler holding a delivery (backpressure: the
// gateway is full) would hold the very acknowledgements that free it.
type Client struct {
	opts     ClientOptions
	log      *slog.Logger
	pc       paho.Client // subscriptions and deliveries
	pub      paho.Client // the gateway's publishes
	subs     subscriptions
	unsubs   sync.Map // filters unsubscribed while disconnected: string -> struct{}
	handler  Handler  // set by Start before the first connection
	inflight *inflight

	started   atomic.Bool
	stopping  atomic.Bool
	state     atomic.Pointer[string]
	lastErr   atomic.Pointer[string]
	stop      chan struct{} // closed by Close: ends connect and subscribe waits
	ready     chan struct{} // closed once the first connection has subscribed
	resub     chan struct{} // a refused or unanswered subscribe, for resubscribe to retry
	readyOnce sync.Once
	wg        sync.WaitGroup
	closeOnce sync.Once

	connects, received, acked, published atomic.Uint64
}

// NewClient checks the options and loads the TLS files; it does not connect (Start does).
func NewClient(opts ClientOptions) (*Client, error) {
	secure, err := brokerTLS(opts.Broker)
	if err != nil {
		return nil, err
	}
	for _, f := range opts.Failover {
		s, err := brokerTLS(f)
		if err != nil {
			return nil, fmt.Errorf("failover: %w", err)
		}
		if s != secure {
			return nil, fmt.Errorf("failover broker URL %q: TLS or not, as %q", redact.URL(f), redact.URL(opts.Broker))
		}
	}
	if !secure && !opts.TLS.Empty() {
		return nil, fmt.Errorf("broker URL %q: TLS files given for a connection without TLS (use ssl:// or wss://)", redact.URL(opts.Broker))
	}
	if err := opts.Presence.valid(); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	if opts.ClientID == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("default client id: %w", err)
		}
		opts.ClientID = "moongate-" + host
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 30 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.MaxReconnectInterval <= 0 {
		opts.MaxReconnectInterval = 30 * time.Second
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = time.Second
	}
	c := &Client{
		opts:     opts,
		log:      loggerOrDiscard(opts.Logger).With(logKeyBroker, redact.URL(opts.Broker)),
		inflight: newInflight(),
		stop:     make(chan struct{}),
		ready:    make(chan struct{}),
		resub:    make(chan struct{}, 1),
	}
	c.setState(StateNew)

	po := paho.NewClientOptions().
		AddBroker(opts.Broker).
		SetClientID(opts.ClientID).
		SetUsername(opts.Username).
		SetPassword(opts.Password).
		SetCleanSession(opts.CleanSession).
		SetProtocolVersion(4). // 3.1.1, without paho's fallback to 3.1
		SetKeepAlive(opts.KeepAlive).
		SetConnectTimeout(opts.ConnectTimeout).
		SetMaxReconnectInterval(opts.MaxReconnectInterval).
		SetAutoReconnect(true).
		SetOrderMatters(true).
		SetAutoAckDisabled(true).
		// Every message goes to the default handler: subscriptions are made without a
		// callback, so the messages a persistent session delivers right after CONNACK,
		// before the subscriptions are renewed, are not lost on the way.
		SetDefaultPublishHandler(c.onMessage).
		SetCustomOpenConnectionFn(openConnection).
		SetOnConnectHandler(c.onConnect).
		SetConnectionLostHandler(c.onConnectionLost)
	pubOpts := paho.NewClientOptions().
		AddBroker(opts.Broker).
		SetClientID(opts.ClientID + "-pub").
		SetUsername(opts.Username).
		SetPassword(opts.Password).
		SetCleanSession(opts.CleanSession). // kept, so publishes in flight are resent
		SetProtocolVersion(4).
		SetKeepAlive(opts.KeepAlive).
		SetConnectTimeout(opts.ConnectTimeout).
		SetMaxReconnectInterval(opts.MaxReconnectInterval).
		SetAutoReconnect(true).
		SetConnectRetry(true). // publishes wait in paho's store until the first connection
		SetConnectRetryInterval(opts.MaxReconnectInterval).
		SetCustomOpenConnectionFn(openConnection).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			c.log.Warn("publishing connection to the broker lost, reconnecting", logKeyErr, err)
		})
	if p := opts.Presence; p != nil {
		// The will rides on the publishing connection: it is the one whose loss means the
		// gateway's messages stop.
		pubOpts.SetBinaryWill(p.Topic, p.Offline, 1, true).
			SetOnConnectHandler(func(pc paho.Client) {
				// paho runs this on a goroutine of its own; the token completes with the
				// PUBACK or the connection's loss, which the next connection repairs.
				pc.Publish(p.Topic, 1, true, p.Online)
			})
	}
	if secure {
		tc, err := opts.TLS.Config("")
		if err != nil {
			return nil, err
		}
		po.SetTLSConfig(tc)
		pubOpts.SetTLSConfig(tc)
	}
	for _, f := range opts.Failover {
		po.AddBroker(f)
		pubOpts.AddBroker(f)
	}
	c.pc = paho.NewClient(po)
	c.pub = paho.NewClient(pubOpts)
	return c, nil
}

// brokerTLS checks a broker URL and reports whether it uses TLS.
func brokerTLS(broker string) (bool, error) {
	u, err := url.Parse(broker)
	if err != nil || broker == "" {
		return false, fmt.Errorf("broker URL %q: want tcp://host:port, ssl://, ws:// or wss://", redact.URL(broker))
	}
	if u.Host == "" {
		return false, fmt.Errorf("broker URL %q: no host", redact.URL(broker))
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ws":
		return false, nil
	case "ssl", "tls", "mqtts", "wss":
		return true, nil
	}
	return false, fmt.Errorf("broker URL %q: unsupported scheme %q (tcp, ssl, ws, wss)", redact.URL(broker), u.Scheme)
}

// Start implements Bus. It returns once the first connection attempt has ended, and if it
// succeeded, once the subscriptions are made. If the
// broker refuses the gateway (bad credentials, client id not allowed), Start returns the
// error: retrying would not help. If the broker cannot be reached (network down, broker
// away, TLS failing, perhaps because a board without a clock has not set its time yet),
// Start returns nil and connects in the background, with growing waits; Status tells.
func (c *Client) Start(ctx context.Context, subs []Subscription, h Handler) error {
	if h == nil {
		return errors.New("mqtt: start: nil handler")
	}
	for _, s := range subs {
		if err := s.validate(); err != nil {
			return fmt.Errorf("start: %w", err)
		}
	}
	if c.stopping.Load() {
		return ErrClosed
	}
	if !c.started.CompareAndSwap(false, true) {
		return errStarted
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.subs.add(subs...)
	c.handler = h
	c.setState(StateConnecting)
	c.pub.Connect() // retries by itself until Close (SetConnectRetry)
	first := make(chan error, 1)
	c.wg.Add(2)
	go c.connect(first)
	go c.resubscribe()
	select {
	case err := <-first:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connect makes connection attempts until one succeeds; from then on paho reconnects by
// itself. The outcome of the first attempt goes to first: nil, or the error when the
// broker refused the gateway, which ends the attempts.
func (c *Client) connect(first chan<- error) {
	defer c.wg.Done()
	wait := max(min(time.Second, c.opts.MaxReconnectInterval), minRetryWait)
	for attempt := 0; ; attempt++ {
		tok := c.pc.Connect()
		select {
		case <-tok.Done():
		case <-c.stop:
			return
		}
		err := tok.Error()
		if err == nil {
			select {
			case <-c.ready: // Start returns with the subscriptions in place
			case <-c.stop:
				return
			}
			if attempt == 0 {
				first <- nil
			}
			return
		}
		c.setLastError(err)
		if attempt == 0 {
			if refused(tok.(*paho.ConnectToken).ReturnCode()) {
				c.setState(StateNew)
				first <- fmt.Errorf("connect %s: %w", redact.URL(c.opts.Broker), err)
				return
			}
			first <- nil
		}
		c.log.Warn("cannot connect to the broker, will retry", logKeyErr, err, "in", wait)
		// The wait (at least minRetryWait) also lets paho finish the failed attempt:
		// it completes the token just before it stops counting itself as connecting,
		// and Connect called in between would report a success it did not make.
		if !c.sleep(wait) {
			return
		}
		wait = max(min(2*wait, c.opts.MaxReconnectInterval), minRetryWait)
	}
}

const minRetryWait = 100 * time.Millisecond

// sleep waits d, or reports false at once when Close stops the client.
func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.stop:
		return false
	}
}

// refused reports whether a CONNACK return code is a refusal that retrying cannot fix.
func refused(rc byte) bool {
	switch rc {
	case packets.ErrRefusedBadProtocolVersion, packets.ErrRefusedIDRejected,
		packets.ErrRefusedBadUsernameOrPassword, packets.ErrRefusedNotAuthorised:
		return true
	}
	return false
}

// onConnect runs on every connection (paho calls it on a goroutine of its own) and
// subscribes again: a broker that lost the session (restarted without persistence, or
// session expired) has forgotten the subscriptions. Renewing a subscription makes the
// broker send its retained messages again.
func (c *Client) onConnect(pc paho.Client) {
	defer c.readyOnce.Do(func() { close(c.ready) })
	n := c.connects.Add(1)
	if subs := c.subs.load(); len(subs) > 0 {
		if err := c.subscribe(pc, subs); err != nil {
			c.setLastError(err)
			c.log.Warn("subscribe after connecting failed, will retry", logKeyErr, err)
			select {
			case c.resub <- struct{}{}:
			default:
			}
		}
	}
	if err := c.unsubscribePending(pc); err != nil {
		c.log.Warn("unsubscribe after connecting", logKeyErr, err)
	}
	if c.stopping.Load() {
		return
	}
	c.setState(StateConnected)
	c.log.Info("connected to the broker", "reconnect", n > 1)
}

func (c *Client) onConnectionLost(_ paho.Client, err error) {
	c.setState(StateConnecting)
	c.setLastError(err)
	c.log.Warn("connection to the broker lost, reconnecting", logKeyErr, err)
}

// wait waits for tok, at most ConnectTimeout or until Close.
func (c *Client) wait(tok paho.Token) error {
	t := time.NewTimer(c.opts.ConnectTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return errors.New("no answer from the broker in time")
	case <-c.stop:
		return ErrClosed
	}
}

// onMessage is paho's default publish handler, called in order on paho's router goroutine.
// The handler may hold it (MayWait): the broker then keeps what follows.
func (c *Client) onMessage(_ paho.Client, pm paho.Message) {
	m := &Message{Topic: pm.Topic(), Payload: pm.Payload(), QoS: pm.Qos(), Retain: pm.Retained(), MayWait: true}
	if m.QoS > 0 {
		if !c.inflight.begin() {
			return // closing: left unacknowledged, the broker redelivers it next session
		}
		m.ack = func() {
			pm.Ack()
			c.acked.Add(1)
			c.inflight.end()
		}
	} else if c.stopping.Load() {
		return
	}
	c.received.Add(1)
	c.handler.HandleMessage(m)
}

// Publish implements Bus. With QoS 1 or 2 it returns once the broker has acknowledged
// the message. While reconnecting, paho keeps QoS 1 and 2 messages and sends them once
// connected; if ctx ends first, Publish returns ctx.Err() and the message may still go.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	if err := ValidTopic(topic); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if qos > 2 {
		return fmt.Errorf("publish %s: QoS %d is not 0, 1 or 2", topic, qos)
	}
	if *c.state.Load() == StateClosed {
		return ErrClosed
	}
	tok := c.pub.Publish(topic, qos, retain, payload)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	c.published.Add(1)
	return nil
}

// Status implements Bus.
func (c *Client) Status() Status {
	st := Status{
		State:     *c.state.Load(),
		Broker:    redact.URL(c.opts.Broker),
		Received:  c.received.Load(),
		Acked:     c.acked.Load(),
		Pending:   c.inflight.count(),
		Published: c.published.Load(),
	}
	if n := c.connects.Load(); n > 1 {
		st.Reconnects = n - 1
	}
	if e := c.lastErr.Load(); e != nil {
		st.LastError = *e
	}
	return st
}

// Close implements Bus.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.stopping.Store(true)
		c.setState(StateClosing)
		if left := c.inflight.drain(c.opts.DrainTimeout); left > 0 {
			c.log.Info("closing with unacknowledged messages; the broker redelivers them", "count", left)
		}
		close(c.stop)
		c.wg.Wait()
		if p := c.opts.Presence; p != nil && c.pub.IsConnectionOpen() {
			// A clean DISCONNECT discards the will: say offline first.
			if !c.pub.Publish(p.Topic, 1, true, p.Offline).WaitTimeout(time.Second) {
				c.log.Warn("presence: offline not acknowledged before closing")
			}
		}
		// Disconnect waits up to 250 ms for the acknowledgements already queued to go out.
		c.pc.Disconnect(250)
		c.pub.Disconnect(250)
		c.setState(StateClosed)
	})
	return nil
}

func (c *Client) setState(s string) { c.state.Store(&s) }

func (c *Client) setLastError(err error) {
	s := redact.String(err.Error()) // paho's errors may quote the broker URL
	c.lastErr.Store(&s)
}

var _ Bus = (*Client)(nil)
