package mqtt

import (
	"context"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Presence is a retained topic that says whether the gateway is up, the way Home
// Assistant and most MQTT dashboards read a device's availability: Online is published
// (retained, QoS 1) when the bus starts, and again on every reconnection to an external
// broker; Offline is published when the bus closes cleanly, and, on an external broker,
// is the connection's last will, so the broker publishes it when the gateway vanishes
// without a word (a crash, a power cut, the network). The embedded broker needs no will:
// it vanishes with the gateway, and its subscribers with it.
type Presence struct {
	Topic   string
	Online  []byte
	Offline []byte
}

// valid reports a Presence with a publishable topic; a nil one means none.
func (p *Presence) valid() error {
	if p == nil {
		return nil
	}
	return ValidTopic(p.Topic)
}

// presenceFlush bounds how long Close waits for the devices' copies of Offline.
const presenceFlush = 500 * time.Millisecond

// sayOffline publishes Offline and waits, at most presenceFlush, until it is written to
// every device subscribed to it: closing the broker next ends the connections, and mochi
// drops what their write queues still hold.
func (e *Embedded) sayOffline(p *Presence) {
	n := 0
	for id := range e.srv.Topics.Subscribers(p.Topic).Subscriptions {
		if cl, ok := e.srv.Clients.Get(id); ok && !cl.Net.Inline && !cl.Closed() {
			n++
		}
	}
	sent := make(chan struct{}, n)
	e.presenceSent.Store(&sent)
	defer e.presenceSent.Store(nil)
	if err := e.Publish(context.Background(), p.Topic, p.Offline, 1, true); err != nil {
		e.log.Warn("embedded broker: presence", logKeyErr, err)
		return
	}
	t := time.NewTimer(presenceFlush)
	defer t.Stop()
	for range n {
		select {
		case <-sent:
		case <-t.C:
			return
		}
	}
}

// OnPacketSent counts the presence messages written while Close says offline.
func (h *embeddedHook) OnPacketSent(_ *mochi.Client, pk packets.Packet, _ []byte) {
	ch := h.e.presenceSent.Load()
	if ch == nil || pk.FixedHeader.Type != packets.Publish || pk.TopicName != h.e.opts.Presence.Topic {
		return
	}
	select {
	case *ch <- struct{}{}:
	default:
	}
}
