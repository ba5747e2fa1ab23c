package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/moongate/moongate/internal/poll"
)

// The heart of the durability contract: a device's QoS 1 PUBACK waits for Ack, and so
// does the forwarding of the message to the other devices.
func TestEmbeddedPubackAfterAck(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{}, []Subscription{{"sensors/+/temp", 1}}, rec)
	url := "tcp://" + e.Addr()
	watcher := device(t, url, nil)
	seen := make(chan paho.Message, 10)
	wait(t, watcher.Subscribe("sensors/#", 1, func(_ paho.Client, m paho.Message) { seen <- m }))
	dev := device(t, url, nil)

	tok := dev.Publish("sensors/kitchen/temp", 1, false, "21.5")
	m := rec.next(t)
	if m.Topic != "sensors/kitchen/temp" || string(m.Payload) != "21.5" || m.QoS != 1 || m.Retain {
		t.Fatalf("handler got %+v", m)
	}
	if tok.WaitTimeout(300 * time.Millisecond) {
		t.Fatal("the device got its PUBACK before Ack")
	}
	select {
	case <-seen:
		t.Fatal("another device got the message before Ack")
	default:
	}
	if st := e.Status(); st.Pending != 1 || st.Acked != 0 {
		t.Fatalf("status before Ack: %+v", st)
	}

	m.Ack()
	m.Ack() // twice is fine
	wait(t, tok)
	select {
	case got := <-seen:
		if string(got.Payload()) != "21.5" {
			t.Fatalf("watcher got %q", got.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the message was not forwarded after Ack")
	}
	poll.Eventually(t, "nothing pending", func() bool { return e.Status().Pending == 0 })
	st := e.Status()
	if st.Received != 1 || st.Acked != 1 || st.Clients != 2 || st.State != StateServing {
		t.Fatalf("status after Ack: %+v", st)
	}
	rec.none(t, 50*time.Millisecond)
}

// QoS 0 messages, and QoS 1 messages under a QoS 0 subscription, are not held.
func TestEmbeddedQoS0NotHeld(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{}, []Subscription{{"a/#", 0}}, rec)
	dev := device(t, "tcp://"+e.Addr(), nil)
	wait(t, dev.Publish("a/1", 1, false, "x")) // PUBACK without any Ack
	if m := rec.next(t); m.QoS != 0 || m.Topic != "a/1" {
		t.Fatalf("got %+v", m)
	}
	wait(t, dev.Publish("a/2", 0, false, "y"))
	if m := rec.next(t); m.QoS != 0 || m.Topic != "a/2" {
		t.Fatalf("got %+v", m)
	}
}

// QoS 2: the device's PUBREC waits for Ack; the message has the smaller of the two QoS.
func TestEmbeddedQoS2(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{}, []Subscription{{"two/#", 2}, {"one/#", 1}}, rec)
	dev := device(t, "tcp://"+e.Addr(), nil)
	for _, tc := range []struct {
		topic string
		qos   byte
	}{{"two/x", 2}, {"one/x", 1}} {
		tok := dev.Publish(tc.topic, 2, false, "q")
		m := rec.next(t)
		if m.QoS != tc.qos {
			t.Fatalf("%s: QoS %d, want %d", tc.topic, m.QoS, tc.qos)
		}
		if tok.WaitTimeout(200 * time.Millisecond) {
			t.Fatalf("%s: QoS 2 flow completed before Ack", tc.topic)
		}
		m.Ack()
		wait(t, tok)
	}
}

// mochi's own chatter shows only at Debug; the bus's warnings show at Info.
func TestEmbeddedQuietBrokerLog(t *testing.T) {
	var info, debug logBuffer
	for _, l := range []struct {
		buf   *logBuffer
		level slog.Level
	}{{&info, slog.LevelInfo}, {&debug, slog.LevelDebug}} {
		logger := slog.New(slog.NewTextHandler(l.buf, &slog.HandlerOptions{Level: l.level}))
		e := startEmbedded(t, EmbeddedOptions{Logger: logger}, nil, newRecorder())
		conn, err := net.Dial("tcp", e.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte{0x10, 0x00}) // a malformed CONNECT
		conn.Close()
		e.Close()
	}
	if strings.Contains(info.String(), "component=mochi") {
		t.Errorf("mochi logs at Info level:\n%s", info.String())
	}
	if !strings.Contains(info.String(), "embedded broker serving") {
		t.Errorf("the bus's own Info records are missing:\n%s", info.String())
	}
	if !strings.Contains(debug.String(), "component=mochi") {
		t.Errorf("mochi's records are missing at Debug level:\n%s", debug.String())
	}
}

// A message that matches several filters reaches the handler once, with the highest QoS.
func TestEmbeddedOverlappingFiltersDeliverOnce(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{}, []Subscription{{"alerts/#", 0}, {"alerts/+", 1}, {"#", 0}}, rec)
	dev := device(t, "tcp://"+e.Addr(), nil)
	tok := dev.Publish("alerts/fire", 1, false, "!")
	m := rec.next(t)
	if m.QoS != 1 {
		t.Fatalf("QoS %d, want the highest matching subscription's, 1", m.QoS)
	}
	m.Ack()
	wait(t, tok)

	// The gateway's own publish: delivered once, never waited for.
	if err := e.Publish(context.Background(), "alerts/smoke", []byte("?"), 1, false); err != nil {
		t.Fatal(err)
	}
	m = rec.next(t)
	if m.Topic != "alerts/smoke" || m.QoS != 1 {
		t.Fatalf("got %+v", m)
	}
	m.Ack() // nothing to acknowledge, and no harm
	rec.none(t, 100*time.Millisecond)
	if st := e.Status(); st.Received != 2 || st.Published != 1 || st.Pending != 0 {
		t.Fatalf("status: %+v", st)
	}
}

// A publish from inside the handler must not deadlock, even for a message that is waiting
// for its own Ack.
func TestEmbeddedPublishFromHandler(t *testing.T) {
	var e *Embedded
	rec := newRecorder()
	h := HandlerFunc(func(m *Message) {
		if m.Topic == "in" {
			if err := e.Publish(context.Background(), "out", m.Payload, 1, false); err != nil {
				t.Error(err)
			}
			m.Ack()
		}
		rec.HandleMessage(m)
	})
	e = startEmbedded(t, EmbeddedOptions{}, []Subscription{{"in", 1}, {"out", 1}}, h)
	dev := device(t, "tcp://"+e.Addr(), nil)
	wait(t, dev.Publish("in", 1, false, "ping"))
	got := map[string]bool{}
	for range 2 {
		got[rec.next(t).Topic] = true
	}
	if !got["in"] || !got["out"] {
		t.Fatalf("got %v", got)
	}
}

// Without an Ack in time, the device is disconnected without a PUBACK and sends the
// message again when it reconnects.
func TestEmbeddedAckTimeoutRedelivers(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{AckTimeout: 200 * time.Millisecond}, []Subscription{{"t", 1}}, rec)
	dev := device(t, "tcp://"+e.Addr(), func(o *paho.ClientOptions) { o.SetCleanSession(false) })
	tok := dev.Publish("t", 1, false, "once")
	first := rec.next(t) // never acknowledged
	second := rec.next(t)
	if string(first.Payload) != "once" || string(second.Payload) != "once" {
		t.Fatalf("got %q then %q", first.Payload, second.Payload)
	}
	second.Ack()
	wait(t, tok)
	first.Ack() // too late: no effect
	poll.Eventually(t, "status", func() bool {
		st := e.Status()
		return st.Refused == 1 && st.Acked == 1 && st.Pending == 0
	})
}

// Close hands back a message still waiting for Ack: the hook returns, the device gets
// no PUBACK, and nothing is left running.
func TestEmbeddedCloseReleasesWaitingHook(t *testing.T) {
	before := runtime.NumGoroutine()
	rec := newRecorder()
	e, err := NewEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", DrainTimeout: 100 * time.Millisecond, AckTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background(), []Subscription{{"t", 1}}, rec); err != nil {
		t.Fatal(err)
	}
	o := paho.NewClientOptions().AddBroker("tcp://" + e.Addr()).SetClientID("closing").SetAutoReconnect(false)
	dev := paho.NewClient(o)
	wait(t, dev.Connect())
	tok := dev.Publish("t", 1, false, "x")
	m := rec.next(t)

	done := make(chan error)
	go func() { done <- e.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs on a message waiting for Ack")
	}
	if tok.WaitTimeout(200*time.Millisecond) && tok.Error() == nil {
		t.Fatal("the device got a PUBACK for a message that was never acknowledged")
	}
	m.Ack() // after Close: no effect, no panic
	if st := e.Status(); st.State != StateClosed || st.Refused != 1 || st.Acked != 0 {
		t.Fatalf("status: %+v", st)
	}
	if err := e.Publish(context.Background(), "t", nil, 0, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	dev.Disconnect(0)
	noLeak(t, before)
}

// Connections accepted while the broker closes are ended too: nothing outlives Close.
func TestEmbeddedCloseWhileConnecting(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 10 {
		e, err := NewEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", WSListen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background(), nil, newRecorder()); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			dialLoop(stop, e.Addr(), func(c net.Conn) {
				held = append(held, c)
				c.Write([]byte{0x10}) // half a CONNECT: the broker waits for the rest
			})
		}()
		time.Sleep(20 * time.Millisecond)
		closed := make(chan struct{})
		go func() { e.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("Close hangs")
		}
		close(stop)
		<-done
	}
	noLeak(t, before)
}

// Close waits for messages acknowledged during the drain: they get their PUBACK.
func TestEmbeddedCloseDrains(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{DrainTimeout: 5 * time.Second}, []Subscription{{"t", 1}}, rec)
	dev := device(t, "tcp://"+e.Addr(), func(o *paho.ClientOptions) { o.SetAutoReconnect(false) })
	tok := dev.Publish("t", 1, false, "x")
	m := rec.next(t)
	go func() {
		time.Sleep(100 * time.Millisecond)
		m.Ack()
	}()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	wait(t, tok)
	if st := e.Status(); st.Acked != 1 || st.Refused != 0 {
		t.Fatalf("status: %+v", st)
	}
}

// SPEC §2: devices are served only once Start has subscribed everything.
func TestEmbeddedDevicesWaitForStart(t *testing.T) {
	e, err := NewEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if st := e.Status(); st.State != StateNew {
		t.Fatalf("state %q before Start", st.State)
	}
	dev := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + e.Addr()).SetClientID("early"))
	tok := dev.Connect()
	defer dev.Disconnect(0)
	if tok.WaitTimeout(300 * time.Millisecond) {
		t.Fatalf("a device connected before Start (err %v)", tok.Error())
	}
	rec := newRecorder()
	if err := e.Start(context.Background(), []Subscription{{"x", 1}}, rec); err != nil {
		t.Fatal(err)
	}
	wait(t, tok)
	pub := dev.Publish("x", 1, false, "first")
	m := rec.next(t)
	m.Ack()
	wait(t, pub)
	if err := e.Start(context.Background(), nil, rec); err == nil {
		t.Fatal("a second Start succeeded")
	}
}

// Retained messages: a new subscription hands them to the handler, and devices keep
// getting them as mochi gives them.
func TestEmbeddedRetained(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{}, nil, rec)
	url := "tcp://" + e.Addr()
	dev := device(t, url, nil)
	wait(t, dev.Publish("devices/d1/fw/state", 1, true, `{"version":"1.0"}`))
	wait(t, dev.Publish("$SYS/forbidden", 0, true, "devices cannot write $SYS"))

	if err := e.Subscribe(Subscription{"devices/+/fw/state", 1}); err != nil {
		t.Fatal(err)
	}
	m := rec.next(t)
	if !m.Retain || m.Topic != "devices/d1/fw/state" || string(m.Payload) != `{"version":"1.0"}` || m.QoS != 1 {
		t.Fatalf("got %+v", m)
	}
	m.Ack()
	if err := e.Subscribe(Subscription{"#", 0}); err != nil {
		t.Fatal(err)
	}
	if m := rec.next(t); m.Topic != "devices/d1/fw/state" { // "#" does not match $SYS
		t.Fatalf("got %+v", m)
	}
	rec.none(t, 50*time.Millisecond)

	other := device(t, url, nil)
	got := make(chan paho.Message, 1)
	wait(t, other.Subscribe("devices/#", 1, func(_ paho.Client, m paho.Message) { got <- m }))
	select {
	case m := <-got:
		if !m.Retained() || string(m.Payload()) != `{"version":"1.0"}` {
			t.Fatalf("device got %v %q", m.Retained(), m.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a device did not get the retained message")
	}

	// $SYS topics are served to devices as mochi does.
	sys := make(chan paho.Message, 100)
	wait(t, other.Subscribe("$SYS/broker/version", 0, func(_ paho.Client, m paho.Message) { sys <- m }))
	select {
	case <-sys:
	case <-time.After(5 * time.Second):
		t.Fatal("no $SYS/broker/version")
	}
}

// Messages between devices that no gateway filter matches flow as in any broker, and
// Unsubscribe stops the handler's share.
func TestEmbeddedDeviceToDeviceAndUnsubscribe(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{}, []Subscription{{"chat/#", 1}}, rec)
	url := "tcp://" + e.Addr()
	a, b := device(t, url, nil), device(t, url, nil)
	got := make(chan string, 10)
	wait(t, a.Subscribe("#", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() }))
	wait(t, b.Publish("other/1", 1, false, "x")) // not the gateway's: no Ack needed
	if topic := <-got; topic != "other/1" {
		t.Fatalf("got %s", topic)
	}
	if err := e.Unsubscribe("chat/#"); err != nil {
		t.Fatal(err)
	}
	wait(t, b.Publish("chat/1", 1, false, "x"))
	if topic := <-got; topic != "chat/1" {
		t.Fatalf("got %s", topic)
	}
	rec.none(t, 50*time.Millisecond)
}

func TestEmbeddedAuth(t *testing.T) {
	var logs logBuffer
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{Username: "dev", Password: "s3cret",
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))},
		[]Subscription{{"t", 1}}, rec)
	url := "tcp://" + e.Addr()
	bad := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("bad").
		SetUsername("dev").SetPassword("wrong").SetAutoReconnect(false))
	tok := bad.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() == nil {
		t.Fatal("a device with a wrong password connected")
	}
	anon := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("anon").SetAutoReconnect(false))
	if tok := anon.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() == nil {
		t.Fatal("an anonymous device connected")
	}
	good := device(t, url, func(o *paho.ClientOptions) { o.SetUsername("dev").SetPassword("s3cret") })
	tok = good.Publish("t", 1, false, "x")
	rec.next(t).Ack()
	wait(t, tok)

	slog.New(slog.NewTextHandler(&logs, nil)).Info("options", "opts", e.opts)
	if strings.Contains(logs.String(), "s3cret") {
		t.Fatalf("the password is in the log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "password=REDACTED") {
		t.Fatalf("the options were not logged redacted:\n%s", logs.String())
	}
}

func TestEmbeddedWebsocket(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{WSListen: "127.0.0.1:0"}, []Subscription{{"ws/#", 1}}, rec)
	if e.WSAddr() == "" || strings.HasSuffix(e.WSAddr(), ":0") {
		t.Fatalf("WSAddr %q", e.WSAddr())
	}
	dev := device(t, "ws://"+e.WSAddr()+"/mqtt", nil)
	got := make(chan paho.Message, 1)
	wait(t, dev.Subscribe("echo", 1, func(_ paho.Client, m paho.Message) { got <- m }))
	tok := dev.Publish("ws/1", 1, false, strings.Repeat("w", 100000)) // spans websocket frames
	m := rec.next(t)
	if len(m.Payload) != 100000 {
		t.Fatalf("payload of %d bytes", len(m.Payload))
	}
	if tok.WaitTimeout(200 * time.Millisecond) {
		t.Fatal("PUBACK before Ack over websocket")
	}
	m.Ack()
	wait(t, tok)
	if err := e.Publish(context.Background(), "echo", []byte("back"), 1, false); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if string(m.Payload()) != "back" {
			t.Fatalf("got %q", m.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing back over websocket")
	}
	if !strings.Contains(e.Status().Broker, "ws://"+e.WSAddr()) {
		t.Fatalf("status broker %q", e.Status().Broker)
	}
}

// A device that drops its connection has its will published; the handler gets it.
func TestEmbeddedWillReachesHandler(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{}, []Subscription{{"devices/+/status", 1}}, rec)
	conn := rawConnect(t, e.Addr(), packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: "raw",
		WillFlag: true, WillTopic: "devices/raw/status", WillPayload: []byte("offline"), WillQos: 1})
	conn.Close() // gone without DISCONNECT
	m := rec.next(t)
	if m.Topic != "devices/raw/status" || string(m.Payload) != "offline" {
		t.Fatalf("got %+v", m)
	}
}

func TestEmbeddedBadArguments(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{}, nil, rec)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"subscribe bad filter", e.Subscribe(Subscription{"a/#/b", 0})},
		{"subscribe QoS 3", e.Subscribe(Subscription{"a", 3})},
		{"publish wildcard", e.Publish(ctx, "a/+", nil, 0, false)},
		{"publish QoS 3", e.Publish(ctx, "a", nil, 3, false)},
	} {
		if tc.err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if _, err := NewEmbedded(EmbeddedOptions{Listen: e.Addr()}); err == nil {
		t.Error("a second broker bound a busy port")
	}
}

// Close while devices keep connecting and leaving: mochi v2.7.9 closes a listener's
// clients under a read lock it takes twice, and a device detaching in between (a
// writer) left both waiting forever. Embedded.closeClients takes it once.
func TestEmbeddedCloseWhileDevicesChurn(t *testing.T) {
	for round := range 100 {
		e, err := NewEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", DrainTimeout: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background(), nil, newRecorder()); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for dev := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("churn%d", dev)
				// CONNECT, MQTT 3.1.1, clean session, keepalive 60 s.
				connect := append([]byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(id))}, id...)
				dialLoop(stop, e.Addr(), func(c net.Conn) {
					c.Write(connect)
					c.Read(make([]byte, 4)) // CONNACK
					c.Close()
				})
			}()
		}
		time.Sleep(time.Duration(round%10) * time.Millisecond)
		done := make(chan struct{})
		go func() {
			e.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Close hangs while devices connect", round)
		}
		close(stop)
		wg.Wait()
	}
}

// dialLoop connects to addr again and again until stop is closed, handing each
// connection to use.
func dialLoop(stop <-chan struct{}, addr string, use func(net.Conn)) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			continue // the broker closed meanwhile
		}
		use(c)
	}
}
