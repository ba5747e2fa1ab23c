package mqtt

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// recorder is a Handler that queues every message for the test to take.
type recorder struct{ ch chan *Message }

func newRecorder() *recorder { return &recorder{ch: make(chan *Message, 10000)} }

func (r *recorder) HandleMessage(m *Message) { r.ch <- m }

// next waits for the next message.
func (r *recorder) next(t testing.TB) *Message {
	t.Helper()
	select {
	case m := <-r.ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message for the handler")
		return nil
	}
}

// none checks that no message comes for a while.
func (r *recorder) none(t testing.TB, wait time.Duration) {
	t.Helper()
	select {
	case m := <-r.ch:
		t.Fatalf("unexpected message %s %q", m.Topic, m.Payload)
	case <-time.After(wait):
	}
}

func startEmbedded(t testing.TB, opts EmbeddedOptions, subs []Subscription, h Handler) *Embedded {
	t.Helper()
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	e, err := NewEmbedded(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if err := e.Start(context.Background(), subs, h); err != nil {
		t.Fatal(err)
	}
	return e
}

var deviceSeq atomic.Int64

// device connects a paho client, as a device would, to broker (a URL).
func device(t testing.TB, broker string, set func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(broker).
		SetClientID(fmt.Sprintf("dev-%d", deviceSeq.Add(1))).
		SetProtocolVersion(4).
		SetConnectTimeout(5 * time.Second).
		SetMaxReconnectInterval(200 * time.Millisecond)
	if set != nil {
		set(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device connect to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func wait(t testing.TB, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("token did not complete")
	}
	if err := tok.Error(); err != nil {
		t.Fatal(err)
	}
}

// noLeak fails if the goroutines started since before do not end within a few seconds.
func noLeak(t testing.TB, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, ourStacks(buf))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ourStacks keeps the stacks that mention this module or its brokers.
func ourStacks(all []byte) []byte {
	var out bytes.Buffer
	for _, g := range bytes.Split(all, []byte("\n\n")) {
		if s := string(g); strings.Contains(s, "mochi") || strings.Contains(s, "paho") || strings.Contains(s, "moongate") {
			out.Write(g)
			out.WriteString("\n\n")
		}
	}
	return out.Bytes()
}

// logBuffer is a log destination safe for the broker's goroutines and the test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// rawConnect dials the broker at addr and sends CONNECT (MQTT 3.1.1) with params,
// checking for a CONNACK that accepts it: for tests that speak MQTT by hand.
func rawConnect(t testing.TB, addr string, params packets.ConnectParams) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	params.ProtocolName = []byte("MQTT")
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4, Connect: params}
	var buf bytes.Buffer
	if err := connect.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	connack := make([]byte, 4)
	if _, err := io.ReadFull(conn, connack); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		t.Fatalf("connack %x, %v", connack, err)
	}
	return conn
}
