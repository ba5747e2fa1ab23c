package mqtt

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// encodePacket is a valid packet's bytes, for the fuzzer's seeds.
func encodePacket(t testing.TB, pk packets.Packet) []byte {
	var b bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&b)
	case packets.Publish:
		err = pk.PublishEncode(&b)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// FuzzEmbeddedListener sends the broker a CONNECT followed by random bytes, as a broken
// or hostile device would, then checks that the broker still serves a well-behaved
// device: no input may crash or wedge it. `go test` runs the seeds; `go test -fuzz
// FuzzEmbeddedListener ./mqtt` explores.
func FuzzEmbeddedListener(f *testing.F) {
	connect := encodePacket(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4, Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "fuzz"}})
	f.Add(connect, []byte{})
	f.Add(connect, encodePacket(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName: "t/a", PacketID: 7, Payload: []byte("x"), ProtocolVersion: 4}))
	f.Add(connect, encodePacket(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID: 1, Filters: packets.Subscriptions{{Filter: "#"}, {Filter: "$SYS/#"}}, ProtocolVersion: 4}))
	f.Add([]byte{}, []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f})          // a CONNECT claiming 256 MiB
	f.Add([]byte{}, []byte{0x30, 0x02, 0x00, 0x05})                      // a PUBLISH before CONNECT
	f.Add(connect, []byte{0x32, 0x06, 0x00, 0x01, '#', 0x00, 0x01, 'x'}) // a wildcard topic
	f.Add(connect, []byte{0x82, 0x04, 0x00, 0x01, 0x00, 0x00})           // an empty filter
	f.Add(connect, bytes.Repeat([]byte{0xc0, 0x00}, 50))                 // PINGREQs

	rec := newRecorder()
	e := startEmbedded(f, EmbeddedOptions{ConnectTimeout: 200 * time.Millisecond, AckTimeout: 200 * time.Millisecond},
		[]Subscription{{"t/#", 1}}, rec)
	go func() { // the handler acknowledges whatever the fuzzer gets through
		for m := range rec.ch {
			m.Ack()
		}
	}()
	probe := device(f, "tcp://"+e.Addr(), nil)

	f.Fuzz(func(t *testing.T, first, rest []byte) {
		c, err := net.Dial("tcp", e.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write(first)
		c.Write(rest)
		c.Read(make([]byte, 64))
		c.Close()
		if tok := probe.Publish("probe", 0, false, "still serving"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("the broker stopped serving a good device: %v", tok.Error())
		}
		if !probe.IsConnectionOpen() {
			t.Fatal("the good device lost its connection")
		}
	})
}
