package mqtt

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/poll"
)

// A device that publishes more than the maximum packet size is disconnected, counted, and
// logged with its client id and the packet's size, once a minute however often it tries;
// a packet under the maximum, from the same connection before and after, goes through.
func TestEmbeddedOversizePacket(t *testing.T) {
	var logs logBuffer
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))},
		[]Subscription{{Filter: "big/#", QoS: 1}}, rec)
	// Count connections: after a drop, IsConnectionOpen can still report the old, dead
	// connection, and a QoS 0 publish written to it is lost.
	var connects atomic.Int64
	dev := device(t, "tcp://"+e.Addr(), func(o *paho.ClientOptions) {
		o.SetClientID("big-dev").SetOnConnectHandler(func(paho.Client) { connects.Add(1) })
	})

	small := bytes.Repeat([]byte("s"), 200<<10) // under the default 256 KiB, over mochi's read buffer
	tok := dev.Publish("big/small", 1, false, small)
	if m := rec.next(t); m.Topic != "big/small" || len(m.Payload) != len(small) {
		t.Fatalf("got %s (%d bytes)", m.Topic, len(m.Payload))
	} else {
		m.Ack()
	}
	wait(t, tok)

	payload := bytes.Repeat([]byte("x"), 1<<20)
	remaining := 2 + len("big/1") + len(payload) // topic length, topic, payload (QoS 0: no packet id)
	size := 1 + 3 + remaining                    // type byte, 3 length bytes, the rest
	for try := 1; try <= 2; try++ {
		dev.Publish("big/1", 0, false, payload) // the broker drops the connection: no ack to wait for
		poll.Eventually(t, fmt.Sprintf("oversize count %d", try), func() bool { return e.Status().Oversize == uint64(try) })
		poll.Eventually(t, "the device reconnected", func() bool { return connects.Load() == int64(1+try) && dev.IsConnectionOpen() })
	}
	line := "client=big-dev remote=127.0.0.1:"
	if n := strings.Count(logs.String(), "packet larger than the maximum packet size"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), line) || !strings.Contains(logs.String(), fmt.Sprintf("size=%d max=%d", size, defaultMaxPacketSize)) {
		t.Errorf("no client id and size %d in:\n%s", size, logs.String())
	}

	dev.Publish("big/small", 0, false, small)
	if m := rec.next(t); m.Topic != "big/small" {
		t.Fatalf("after reconnect got %s", m.Topic)
	}
	rec.none(t, 100*time.Millisecond) // the oversize ones never reached the handler
}

// MaxPacketSize raises the limit: the same 1 MB goes through.
func TestEmbeddedMaxPacketSizeOption(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{MaxPacketSize: 2 << 20}, []Subscription{{Filter: "big/#", QoS: 1}}, rec)
	dev := device(t, "tcp://"+e.Addr(), nil)
	dev.Publish("big/1", 0, false, bytes.Repeat([]byte("x"), 1<<20))
	if m := rec.next(t); len(m.Payload) != 1<<20 {
		t.Fatalf("got %d bytes", len(m.Payload))
	}
	if n := e.Status().Oversize; n != 0 {
		t.Errorf("oversize %d", n)
	}
}

// The framing survives packets split across reads and reads holding several packets.
func TestFramedConnSizes(t *testing.T) {
	var stream []byte
	packet := func(body int) []byte {
		p := []byte{0x30}
		for n := body; ; {
			b := byte(n % 128)
			if n /= 128; n > 0 {
				b |= 0x80
			}
			p = append(p, b)
			if n == 0 {
				break
			}
		}
		return append(p, bytes.Repeat([]byte{0}, body)...)
	}
	for _, body := range []int{0, 5, 127, 128, 16383, 100} {
		stream = append(stream, packet(body)...)
	}
	stream = append(stream, packet(20000)...)
	for _, chunk := range []int{1, 3, 7, 4096, len(stream)} {
		fc := newFramedConn(&chunkConn{data: stream, chunk: chunk}, 16384)
		buf := make([]byte, 8192)
		for {
			if _, err := fc.Read(buf); err != nil {
				break
			}
		}
		if got, want := fc.oversize.Load(), int64(1+3+20000); got != want {
			t.Errorf("reads of %d: oversize %d, want %d", chunk, got, want)
		}
	}
}

// chunkConn reads data back chunk bytes at a time.
type chunkConn struct {
	net.Conn
	data  []byte
	chunk int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.data[:min(c.chunk, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}
