package console_test

import (
	"fmt"
	"io"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/moongate/moongate/gateway/console"
)

// BenchmarkPublish measures what the gateway's hot path pays per live message: with no
// console open, and with five consoles of which one has stopped reading, with and
// without the rate cap. The stalled client must cost no more than a reading one (its
// messages are dropped and counted); past the cap, messages are not even encoded.
func BenchmarkPublish(b *testing.B) {
	ev := console.Event{ID: "01JD4Q7W6X3N1ZB5V8K2M9P0RS", Source: "mqtt", Topic: "sensors/kitchen/temp",
		Payload: []byte(`{"temp":21.5,"humidity":40.2,"battery":3.01}`), QoS: 1}
	inv := console.Invocation{Function: "temp-alert", Version: 3, EventID: ev.ID, Topic: ev.Topic,
		DurationUS: 812, Result: []byte(`{"alert":false}`)}

	b.Run("clients=0", func(b *testing.B) {
		s := startHub(b, console.HubOptions{})
		b.ReportAllocs()
		for b.Loop() {
			s.hub.Publish(ev)
			s.hub.Publish(inv)
		}
	})
	for _, tc := range []struct{ stalled, maxRate int }{{0, -1}, {1, -1}, {1, 0}} {
		rate := "none"
		if tc.maxRate == 0 {
			rate = "default"
		}
		stalled := tc.stalled
		b.Run(fmt.Sprintf("clients=5,stalled=%d,cap=%s", stalled, rate), func(b *testing.B) {
			s := startHub(b, console.HubOptions{MaxRate: tc.maxRate})
			for range 5 - stalled {
				c := s.dial(b, "", nil, nil)
				go drain(c)
			}
			for range stalled {
				d, _ := smallWindowDialer()
				s.dial(b, "", d, nil) // never read
			}
			b.ReportAllocs()
			for b.Loop() {
				s.hub.Publish(ev)
				s.hub.Publish(inv)
			}
			b.ReportMetric(float64(s.hub.Stats().Skipped)/float64(b.N), "skipped/op")
		})
	}
}

func drain(c *websocket.Conn) {
	for {
		_, r, err := c.NextReader()
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, r)
	}
}
