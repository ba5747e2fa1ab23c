package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// The devices and the receiver speak MQTT on raw connections through paho's packet codec:
// a full paho client per device costs more CPU than the systems under test on two cores.

// load is one run of the workload: devices publishing readings, a receiver counting what
// comes out.
type load struct {
	devices   int
	readings  int            // per device
	rate      float64        // readings per second over all devices; 0 = as fast as possible
	inStep    bool           // rate mode: every device sends at the same instants (see device)
	qos       byte           // of the readings and of the receiver's subscription
	window    int            // QoS 1: unacknowledged readings per device
	expect    func(int) bool // does reading seq come out at the receiver?
	backlog   bool           // the gateway is down while the devices publish (see run)
	neighbour bool           // the runaway function is deployed (see startGateway)
	attack    bool           // a flooding device and the runaway function run beside (see attack)
}

// result is what one run measured.
type result struct {
	sent, expected   int
	received, dups   int
	firstSent, last  time.Time // the first publish, the last expected message received
	latencies        []time.Duration
	generatorStalled time.Duration // rate mode: how far the devices fell behind schedule
}

// dial opens an MQTT 3.1.1 connection with a clean session and waits for CONNACK.
func dial(addr, clientID string) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.ClientIdentifier, cp.CleanSession, cp.Keepalive = clientID, true, 600
	if err := cp.Write(c); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("connect %s: %w", clientID, err)
	}
	r := bufio.NewReaderSize(c, 64<<10)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := packets.ReadPacket(r)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("connack %s: %w", clientID, err)
	}
	if ack, ok := p.(*packets.ConnackPacket); !ok || ack.ReturnCode != 0 {
		c.Close()
		return nil, nil, fmt.Errorf("connack %s: %v", clientID, p)
	}
	return c, r, nil
}

// reading is the JSON the devices publish and the function's alert repeats (device, seq, ts).
type reading struct {
	Device string  `json:"device"`
	Seq    int     `json:"seq"`
	TS     float64 `json:"ts"` // µs since the epoch: exact in a Lua number
	Temp   float64 `json:"temp,omitempty"`
}

// receiver subscribes to filter and records each expected message once.
type receiver struct {
	conn   net.Conn
	r      *bufio.Reader
	l      *load
	seen   []uint8 // per device*readings+seq
	mu     sync.Mutex
	res    result
	count  atomic.Int64 // expected messages received, first copies
	probed atomic.Bool  // a reading of device "probe" came out (see probe)
	done   chan struct{}
	err    error
}

func newReceiver(addr, filter string, l *load) (*receiver, error) {
	c, r, err := dial(addr, "bench-receiver")
	if err != nil {
		return nil, err
	}
	sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sp.MessageID, sp.Topics, sp.Qoss = 1, []string{filter}, []byte{l.qos}
	if err := sp.Write(c); err != nil {
		c.Close()
		return nil, err
	}
	for {
		p, err := packets.ReadPacket(r)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("suback: %w", err)
		}
		if _, ok := p.(*packets.SubackPacket); ok {
			break
		}
	}
	rc := &receiver{conn: c, r: r, l: l, seen: make([]uint8, l.devices*l.readings), done: make(chan struct{})}
	for seq := 0; seq < l.readings; seq++ {
		if l.expect(seq) {
			rc.res.expected += l.devices
		}
	}
	rc.res.latencies = make([]time.Duration, 0, rc.res.expected)
	go rc.run()
	return rc, nil
}

func (rc *receiver) run() {
	defer close(rc.done)
	w := bufio.NewWriter(rc.conn)
	for {
		p, err := packets.ReadPacket(rc.r)
		if err != nil {
			if err != io.EOF {
				rc.err = err
			}
			return
		}
		pub, ok := p.(*packets.PublishPacket)
		if !ok {
			continue
		}
		now := time.Now()
		if pub.Qos > 0 {
			ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
			ack.MessageID = pub.MessageID
			ack.Write(w)
			if rc.r.Buffered() == 0 {
				w.Flush()
			}
		}
		var m reading
		if json.Unmarshal(pub.Payload, &m) != nil {
			continue
		}
		if m.Device == "probe" {
			rc.probed.Store(true)
			continue
		}
		dev, err := strconv.Atoi(strings.TrimPrefix(m.Device, "dev-"))
		if err != nil || dev < 0 || dev >= rc.l.devices || m.Seq < 0 || m.Seq >= rc.l.readings {
			continue
		}
		rc.mu.Lock()
		i := dev*rc.l.readings + m.Seq
		if rc.seen[i]++; rc.seen[i] > 1 {
			rc.res.dups++
		} else {
			rc.res.received++
			rc.res.last = now
			rc.res.latencies = append(rc.res.latencies, now.Sub(time.UnixMicro(int64(m.TS))))
		}
		rc.mu.Unlock()
		rc.count.Add(1)
	}
}

// wait returns once every expected message arrived, or nothing new arrived for idle.
func (rc *receiver) wait(idle time.Duration) result {
	last, lastChange := int64(-1), time.Now()
	for {
		n := rc.count.Load()
		if int(n) >= rc.res.expected {
			break
		}
		if n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) > idle {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rc.conn.Close()
	<-rc.done
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.res
}

// publish runs the devices to the end of their readings; the returned time is when the
// first was sent.
func (l *load) publish(addr string) (time.Time, time.Duration, error) {
	type dev struct {
		conn net.Conn
		r    *bufio.Reader
	}
	devs := make([]dev, l.devices)
	for k := range devs {
		c, r, err := dial(addr, fmt.Sprintf("dev-%d", k))
		if err != nil {
			return time.Time{}, 0, err
		}
		devs[k] = dev{c, r}
		defer c.Close()
	}
	start := time.Now()
	var interval time.Duration
	if l.rate > 0 {
		interval = time.Duration(float64(l.devices) / l.rate * float64(time.Second))
	}
	var wg sync.WaitGroup
	errs := make(chan error, l.devices)
	var behind atomic.Int64
	for k := range devs {
		wg.Add(1)
		go func(k int, d dev) {
			defer wg.Done()
			if err := l.device(k, d.conn, d.r, start, interval, &behind); err != nil {
				errs <- fmt.Errorf("dev-%d: %w", k, err)
			}
		}(k, devs[k])
	}
	wg.Wait()
	close(errs)
	return start, time.Duration(behind.Load()), <-errs
}

// device publishes one device's readings: as fast as the connection takes them, or one
// every interval on a fixed schedule (open loop: a late reading is sent at once, not
// skipped). Device k's schedule starts k/devices of an interval late, as independent
// devices' clocks are spread; in step (l.inStep) all of them send at the same instants,
// a burst of one reading per device every interval. At QoS 1 at most l.window are
// unacknowledged at a time.
func (l *load) device(k int, c net.Conn, r *bufio.Reader, start time.Time, interval time.Duration, behind *atomic.Int64) error {
	name := fmt.Sprintf("dev-%d", k)
	topic := "sensors/" + name + "/temp"
	w := bufio.NewWriterSize(c, 4<<10)
	var window chan struct{}
	acks := make(chan error, 1)
	if l.qos > 0 {
		window = make(chan struct{}, l.window)
		go func() {
			for {
				p, err := packets.ReadPacket(r)
				if err != nil {
					acks <- err
					return
				}
				if _, ok := p.(*packets.PubackPacket); ok {
					<-window
				}
			}
		}()
	}
	buf := make([]byte, 0, 128)
	var late time.Duration
	if !l.inStep && interval > 0 {
		start = start.Add(interval * time.Duration(k) / time.Duration(l.devices))
	}
	for seq := 0; seq < l.readings; seq++ {
		if interval > 0 {
			due := start.Add(time.Duration(seq) * interval)
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			} else {
				late = max(late, -d)
			}
		}
		if window != nil {
			window <- struct{}{}
		}
		temp := "21.5"
		if l.expect(seq) {
			temp = "35.5"
		}
		buf = append(buf[:0], `{"device":"`...)
		buf = append(buf, name...)
		buf = append(buf, `","seq":`...)
		buf = strconv.AppendInt(buf, int64(seq), 10)
		buf = append(buf, `,"ts":`...)
		buf = strconv.AppendInt(buf, time.Now().UnixMicro(), 10)
		buf = append(buf, `,"temp":`...)
		buf = append(buf, temp...)
		buf = append(buf, '}')
		pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		pp.TopicName, pp.Qos, pp.Payload = topic, l.qos, buf
		if l.qos > 0 {
			pp.MessageID = uint16(seq%65535 + 1)
		}
		if err := pp.Write(w); err != nil {
			return err
		}
		if interval > 0 || window != nil && len(window) == cap(window) {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if window != nil { // wait for the last acknowledgements
		for i := 0; i < cap(window); i++ {
			select {
			case window <- struct{}{}:
			case err := <-acks:
				return fmt.Errorf("waiting for PUBACKs: %w", err)
			}
		}
	}
	for old := behind.Load(); int64(late) > old && !behind.CompareAndSwap(old, int64(late)); old = behind.Load() {
	}
	return nil
}

// probeOnce publishes one alerting reading of device "probe" at QoS 0.
func probeOnce(c net.Conn) error {
	pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pp.TopicName = "sensors/probe/temp"
	pp.Payload = []byte(`{"device":"probe","seq":0,"ts":0,"temp":35.5}`)
	return pp.Write(c)
}

// attack runs the bad neighbour of issue 21 until the returned stop: one device floods
// QoS 0 readings on ever new topics that the workload's function takes (sensors/flood-N/temp),
// as fast as its connection goes, and another restarts the runaway function's loop every
// 10 ms.
func attack(addr string) (stop func(), err error) {
	flood, _, err := dial(addr, "flood")
	if err != nil {
		return nil, err
	}
	looper, _, err := dial(addr, "looper")
	if err != nil {
		flood.Close()
		return nil, err
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		w := bufio.NewWriterSize(flood, 4<<10)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
			pp.TopicName = fmt.Sprintf("sensors/flood-%d/temp", i)
			pp.Payload = []byte(`{"device":"flood","seq":0,"ts":0,"temp":99}`)
			if pp.Write(w) != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
			pp.TopicName, pp.Payload = "loop/start", []byte("go")
			if pp.Write(looper) != nil {
				return
			}
		}
	}()
	return func() {
		close(done)
		flood.Close() // ends a write the broker holds back
		looper.Close()
		wg.Wait()
	}, nil
}
