// Package mqtt is Moongate's MQTT bus: one Bus interface with two backends, an embedded
// broker that devices connect to (Embedded, on mochi-mqtt) and a client of an external
// broker (Client, on paho.mqtt.golang), plus MQTT topic-filter matching.
//
// Both backends hand every message that matches a subscription to one Handler and hold
// back the QoS 1 acknowledgement until the handler calls Message.Ack, so a message is
// acknowledged only once its effects are durable: with an external broker the gateway's
// PUBACK is sent after Ack (persistent session, manual acks); with the embedded broker the
// publishing device gets its PUBACK after Ack.
package mqtt

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Bus is the shared contract of the two backends. It is declared here, beside them, because
// the gateway and the tests use both through it.
type Bus interface {
	// Start subscribes subs, then starts receiving and hands every message to h.
	// With the embedded broker, devices can connect only after Start has subscribed
	// everything; with an external broker, the messages the persistent session queued
	// while the gateway was away are consumed only once h and subs are in place.
	// Start returns; it does not run the bus for the lifetime of ctx (Close stops it).
	Start(ctx context.Context, subs []Subscription, h Handler) error
	// Subscribe adds a subscription (a later deploy). Subscribing a filter again
	// replaces its QoS.
	Subscribe(s Subscription) error
	// Unsubscribe removes the subscription of filter; unknown filters are not an error.
	Unsubscribe(filter string) error
	// Publish sends a message. With QoS 1 it returns once the broker has the message
	// (external) or once it is handed to the subscribers (embedded). The embedded broker
	// hands a chain in ctx (WithChain) to the handler with the message.
	Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error
	// Status is a snapshot of the state and counters.
	Status() Status
	// Close stops taking messages, waits a little for the acknowledgements of messages
	// already handed to the handler, hands the others back unacknowledged (the broker
	// or the device redelivers them), and disconnects.
	Close() error
}

// Message is one message handed to a Handler. Payload is shared: do not modify it.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte // the QoS it was delivered with: the smaller of the publish and the subscription QoS
	Retain  bool // a retained message, sent because a subscription was made (it may have been seen before)
	// MayWait says that HandleMessage may hold this message's call to slow its sender
	// down: a device's publish on the embedded broker, delivered on that device's own
	// connection goroutine, or an external broker's message, delivered on the goroutine
	// that reads the gateway's subscriptions (the gateway publishes on a connection of its
	// own, so holding it never holds the acknowledgements of the gateway's publishes).
	// Never set on the gateway's own publishes on the embedded broker.
	MayWait bool
	// OnSenderGoroutine says that HandleMessage runs on a goroutine that serves this
	// message's sender alone (one device connection of the embedded broker), so work done
	// on it before returning slows that sender only.
	OnSenderGoroutine bool
	// Chain names the functions whose invocations published this message (WithChain),
	// oldest first; nil for a device's message and on an external broker.
	Chain []string

	ack  func() // nil when there is nothing to acknowledge
	once sync.Once
}

// Ack tells the bus that the message's effects are durable. For QoS 1 and 2 the external
// broker (Client) or the publishing device (Embedded) gets its acknowledgement only after
// Ack. Ack is safe to call from any goroutine, more than once, and on messages with
// nothing to acknowledge (QoS 0, retained, the gateway's own publishes), where it does
// nothing.
func (m *Message) Ack() {
	if m.ack != nil {
		m.once.Do(m.ack)
	}
}

// Handler receives the messages of a Bus.
//
// HandleMessage must return quickly and must not block, unless the message's MayWait is
// set (then holding it slows its sender down): it runs on the connection's
// receive path (for the embedded broker, also inside Publish when the gateway publishes to
// a topic it subscribes to). Work and the call to Ack happen later, on any goroutine.
// With the embedded broker HandleMessage is called concurrently, from one goroutine per
// device connection, each in the device's order; with an external broker it is called
// from one goroutine, in the order the broker sends.
//
// A message may arrive more than once (QoS 1 is at least once), and an external broker's
// persistent session may deliver messages of filters that were unsubscribed while the
// gateway was away: acknowledge those too.
type Handler interface {
	HandleMessage(m *Message)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(m *Message)

// HandleMessage calls f(m).
func (f HandlerFunc) HandleMessage(m *Message) { f(m) }

// Subscription is a topic filter and the QoS wanted for it (0, 1 or 2).
type Subscription struct {
	Filter string
	QoS    byte
}

func (s Subscription) validate() error {
	if err := ValidFilter(s.Filter); err != nil {
		return err
	}
	if s.QoS > 2 {
		return fmt.Errorf("subscribe %q: QoS %d is not 0, 1 or 2", s.Filter, s.QoS)
	}
	return nil
}

// The values of Status.State.
const (
	StateNew        = "new"        // created, not started
	StateConnecting = "connecting" // external broker: (re)connecting
	StateConnected  = "connected"  // external broker: connected
	StateServing    = "serving"    // embedded broker: accepting devices
	StateClosing    = "closing"    // Close is draining
	StateClosed     = "closed"
)

// Status is a snapshot of a Bus.
type Status struct {
	State     string // one of the State constants
	Broker    string // the external broker's URL, or the embedded broker's listen URLs
	Clients   int    // embedded: devices connected now
	Received  uint64 // messages handed to the handler
	Acked     uint64 // acknowledgements sent after Ack (QoS 1 and 2)
	Pending   int    // messages handed to the handler and not acknowledged yet
	Published uint64 // successful Publish calls
	// Refused counts QoS 1 and 2 messages handed back unacknowledged: the embedded broker
	// disconnects the device (it redelivers) when Ack does not come in time or the bus closes.
	Refused uint64
	// Oversize counts devices disconnected for a packet larger than the embedded
	// broker's maximum packet size.
	Oversize   uint64
	Reconnects uint64 // external: connections after the first
	LastError  string // external: why the last connection attempt failed or the connection dropped

	// Embedded: devices refused at CONNECT for bad credentials, refused without a check
	// because their address failed too often, publishes and subscriptions the ACL denied,
	// and connections closed at once past the connection caps.
	AuthFailures, LoginsThrottled, ACLDenied, ConnectionsRefused uint64
	// RetainRefused counts retained publishes delivered but not kept: the retained store's
	// bounds (count, bytes, per device) were reached.
	RetainRefused uint64
	// Embedded: the persistent sessions held (their devices connected or gone away), and
	// those ended past the session bounds (sessions.go).
	Sessions        int
	SessionsEvicted uint64
}

// ErrClosed is returned by the methods of a closed Bus.
var ErrClosed = errors.New("mqtt: bus closed")

// errStarted is returned by a second Start.
var errStarted = errors.New("mqtt: bus already started")
