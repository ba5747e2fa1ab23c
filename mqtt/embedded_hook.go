package mqtt

import (
	"errors"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// embeddedHook connects mochi's events to the Embedded broker.
type embeddedHook struct {
	mochi.HookBase
	e *Embedded
}

func (h *embeddedHook) ID() string { return "moongate" }

func (h *embeddedHook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnectAuthenticate, mochi.OnSessionEstablished, mochi.OnACLCheck, mochi.OnPublish, mochi.OnPacketProcessed,
		mochi.OnWillSent, mochi.OnDisconnect, mochi.OnPacketSent, mochi.OnSubscribed, mochi.OnUnsubscribed:
		return true
	}
	return false
}

func (h *embeddedHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	return h.e.authenticate(cl, pk) && h.e.willAllowed(cl, pk)
}

// OnSessionEstablished starts the device's counters: its ConnectedAt is now, not when it
// first publishes or is first listed.
func (h *embeddedHook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	h.e.device(cl)
	h.e.boundSessions(cl)
}

func (h *embeddedHook) OnSubscribed(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if !cl.Net.Inline {
		h.e.deviceFilters.add(cl.ID, pk.Filters)
	}
}

func (h *embeddedHook) OnUnsubscribed(cl *mochi.Client, pk packets.Packet) {
	if !cl.Net.Inline {
		h.e.deviceFilters.remove(cl.ID, pk.Filters)
	}
}

func (h *embeddedHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	return h.e.aclCheck(cl, topic, write)
}

func (h *embeddedHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	h.e.pace(cl, pk)
	if !h.e.publishAllowed(cl, pk.TopicName) {
		return pk, packets.CodeSuccessIgnore // acknowledged, neither delivered nor retained
	}
	if pk.FixedHeader.Retain && !cl.Net.Inline && (len(pk.Payload) > 0 && h.e.shortOfMemory() || !h.e.retained.admit(cl.ID, pk.TopicName, len(pk.Payload))) {
		// Delivered, not kept: the retained store is full, or this device's share of it.
		pk.FixedHeader.Retain = false
		h.e.retainRefused.Add(1)
		if h.e.access.denied.Fail("retain " + cl.ID) {
			h.e.log.Warn("embedded broker: a retained message was not kept: the retained store is full, or the gateway short of memory (logged once a minute per device)",
				logKeyClient, cl.ID, logKeyTopic, pk.TopicName)
		}
	}
	var chain []string
	if cl.Net.Inline {
		chain = takeChain(&pk) // the gateway's own: no subscriber sees it
	}
	return pk, h.e.onPublish(cl, pk, chain)
}

// OnPacketProcessed runs after mochi has handled a packet, PUBACK written.
func (h *embeddedHook) OnPacketProcessed(cl *mochi.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	if _, ok := h.e.processing.LoadAndDelete(cl); ok {
		h.e.inflight.end()
	}
}

// OnDisconnect forgets the device's counters, and counts and logs a device dropped for a packet larger than the maximum:
// mochi closes the connection without a word (a 3.1.1 client has no reason code to get).
func (h *embeddedHook) OnDisconnect(cl *mochi.Client, err error, _ bool) {
	h.e.devices.Delete(cl)
	h.e.wentAway(cl)
	if !errors.Is(err, packets.ErrPacketTooLarge) {
		return
	}
	e := h.e
	e.oversize.Add(1)
	if !e.oversizeLog.due(cl.ID, time.Now()) {
		return
	}
	var size int64
	if fc, ok := cl.Net.Conn.(*framedConn); ok {
		size = fc.oversize.Load()
	}
	e.log.Warn("device disconnected: packet larger than the maximum packet size (mqtt.embedded.max_packet_size)",
		"client", cl.ID, "remote", cl.Net.Remote, "size", size, "max", e.opts.MaxPacketSize)
}

// OnWillSent hands a device's last will to the handler: mochi publishes wills without
// the OnPublish hook.
func (h *embeddedHook) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	e := h.e
	ref := e.handler.Load()
	if ref == nil || e.stopping.Load() {
		return
	}
	if subQoS, ok := e.subs.match(pk.TopicName); ok {
		e.deliver(ref.h, &Message{Topic: pk.TopicName, Payload: pk.Payload, QoS: min(pk.FixedHeader.Qos, subQoS)})
	}
}
