package mqtt

import (
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"
)

// Device is one device connected to the embedded broker, for the console.
type Device struct {
	ClientID    string
	User        string // "" for an anonymous device
	Remote      string // its address
	Listener    string // tcp or ws
	ConnectedAt time.Time
	Received    uint64  // publishes it sent
	Rate        float64 // publishes a second, over the last few seconds
	Denied      uint64  // publishes and subscriptions the ACL refused it
	Slowed      uint64  // publishes that waited for its rate limit
}

// ErrNoDevice is DisconnectDevice's answer for a client id that is not connected.
var ErrNoDevice = errors.New("no such device connected")

// deviceState is what the broker keeps per connected device: its share of the broker
// (the rate limits that keep one device from starving the others) and its counters.
type deviceState struct {
	connectedAt time.Time
	msgs, bytes *rate.Limiter // nil: no limit

	received, denied, slowed atomic.Uint64
	// rate is an exponentially weighted publishes-per-second, updated on publish.
	mu       sync.Mutex
	ewma     float64
	lastTick time.Time
	count    int // publishes since lastTick
}

// Per-device fair share: a device past it waits (its connection is not read meanwhile,
// so TCP slows it down), the others do not. Chosen above what a sensor sends and below
// what one device can push to starve a Pi.
const (
	defaultDeviceRate      = 2000    // publishes a second
	defaultDeviceByteRate  = 1 << 20 // payload bytes a second
	deviceRateWindow       = time.Second
	deviceRateSmoothFactor = 0.5 // weight of the newest second in Device.Rate
)

func (e *Embedded) newDeviceState(now time.Time) *deviceState {
	d := &deviceState{connectedAt: now, lastTick: now}
	if e.opts.DeviceRate > 0 {
		d.msgs = rate.NewLimiter(rate.Limit(e.opts.DeviceRate), max(1, int(e.opts.DeviceRate)))
	}
	if e.opts.DeviceByteRate > 0 {
		d.bytes = rate.NewLimiter(rate.Limit(e.opts.DeviceByteRate), max(int(e.opts.MaxPacketSize), e.opts.DeviceByteRate))
	}
	return d
}

func (e *Embedded) device(cl *mochi.Client) *deviceState {
	if d, ok := e.devices.Load(cl); ok {
		return d.(*deviceState)
	}
	if cl.Closed() { // gone (OnDisconnect has forgotten it): count into nothing
		return e.newDeviceState(time.Now())
	}
	d, _ := e.devices.LoadOrStore(cl, e.newDeviceState(time.Now()))
	return d.(*deviceState)
}

// pace counts a device's publish and waits while the device is over its share. It runs
// on the device's connection goroutine; it returns early when the broker closes.
func (e *Embedded) pace(cl *mochi.Client, pk packets.Packet) {
	if cl.Net.Inline { // the gateway's own publishes: a function's are bounded elsewhere
		return
	}
	d := e.device(cl)
	d.received.Add(1)
	now := time.Now()
	d.tick(now, 1)
	var wait time.Duration
	if d.msgs != nil {
		wait = d.msgs.ReserveN(now, 1).DelayFrom(now)
	}
	if d.bytes != nil && len(pk.Payload) > 0 {
		wait = max(wait, d.bytes.ReserveN(now, min(len(pk.Payload), d.bytes.Burst())).DelayFrom(now))
	}
	if wait <= 0 {
		return
	}
	d.slowed.Add(1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.inflight.released: // the broker is closing
	}
}

// tick folds the publishes of each elapsed window into the moving rate.
func (d *deviceState) tick(now time.Time, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.count += n
	for el := now.Sub(d.lastTick); el >= deviceRateWindow; el = now.Sub(d.lastTick) {
		d.ewma = deviceRateSmoothFactor*float64(d.count) + (1-deviceRateSmoothFactor)*d.ewma
		d.count = 0
		d.lastTick = d.lastTick.Add(deviceRateWindow)
		if el > 10*deviceRateWindow { // long idle: the rate is zero, skip ahead
			d.ewma, d.lastTick = 0, now
		}
	}
}

func (d *deviceState) rate(now time.Time) float64 {
	d.tick(now, 0)
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ewma
}

// Devices lists the connected devices, by client id.
func (e *Embedded) Devices() []Device {
	now := time.Now()
	var out []Device
	for _, cl := range e.srv.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		d := e.device(cl)
		out = append(out, Device{
			ClientID: cl.ID, User: string(cl.Properties.Username), Remote: cl.Net.Remote, Listener: cl.Net.Listener,
			ConnectedAt: d.connectedAt, Received: d.received.Load(), Rate: d.rate(now),
			Denied: d.denied.Load(), Slowed: d.slowed.Load(),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out
}

// DisconnectDevice ends a device's connection (an MQTT 5 device is told why). It may
// reconnect: to keep it out, remove its user from the password file.
func (e *Embedded) DisconnectDevice(clientID string) error {
	cl, ok := e.srv.Clients.Get(clientID)
	if !ok || cl.Net.Inline || cl.Closed() {
		return ErrNoDevice
	}
	e.log.Info("embedded broker: disconnecting a device on request", logKeyClient, clientID)
	e.disconnect(cl, packets.ErrAdministrativeAction)
	return nil
}
