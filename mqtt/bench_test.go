package mqtt

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/mosquittotest"
)

// acker acknowledges messages on its own goroutine, as the gateway does after its commit.
func acker(b *testing.B) (Handler, *atomic.Int64) {
	ch := make(chan *Message, 4096)
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ch {
			m.Ack()
			n.Add(1)
		}
	}()
	b.Cleanup(func() { close(ch); <-done })
	return HandlerFunc(func(m *Message) { ch <- m }), &n
}

func msgsPerSec(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

// In-process publish -> handler: the gateway publishing to a topic a function listens on.
func BenchmarkEmbeddedDeliver(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			var n atomic.Int64
			h := HandlerFunc(func(*Message) { n.Add(1) })
			e := startEmbedded(b, EmbeddedOptions{}, []Subscription{{"bench/+/temp", 1}}, h)
			ctx, payload := context.Background(), []byte(`{"t":21.5}`)
			b.ReportAllocs()
			for b.Loop() {
				if err := e.Publish(ctx, "bench/dev1/temp", payload, qos, false); err != nil {
					b.Fatal(err)
				}
			}
			if int(n.Load()) != b.N {
				b.Fatalf("handler got %d of %d", n.Load(), b.N)
			}
			msgsPerSec(b, b.N)
		})
	}
}

// A device's QoS 1 publish -> handler -> Ack on another goroutine -> PUBACK -> the
// device's token completes. With several devices, each waits for its own PUBACKs.
func BenchmarkEmbeddedQoS1Roundtrip(b *testing.B) {
	for _, devices := range []int{1, 8} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			h, _ := acker(b)
			e := startEmbedded(b, EmbeddedOptions{}, []Subscription{{"bench/#", 1}}, h)
			devs := make([]paho.Client, devices)
			for i := range devs {
				devs[i] = device(b, "tcp://"+e.Addr(), nil)
			}
			var next atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for i, d := range devs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					topic := fmt.Sprintf("bench/%d/temp", i)
					for next.Add(1) <= int64(b.N) {
						if tok := d.Publish(topic, 1, false, "21.5"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
							b.Errorf("publish: %v", tok.Error())
							return
						}
					}
				}()
			}
			wg.Wait()
			msgsPerSec(b, b.N)
		})
	}
}

// A device publishes QoS 1 to Mosquitto; the gateway's Client gets it and acks it on
// another goroutine. Publishes are pipelined; the clock stops when all were acked.
func BenchmarkClientQoS1Deliver(b *testing.B) {
	m := mosquittotest.StartMosquitto(b, mosquittotest.MosquittoOptions{Config: "max_inflight_messages 1000\nmax_queued_messages 100000\n"})
	h, n := acker(b)
	startClient(b, clientOpts(m.URL, "gw-bench"), []Subscription{{"bench/#", 1}}, h)
	dev := device(b, m.URL, func(o *paho.ClientOptions) { o.SetMaxResumePubInFlight(1000) })
	b.ResetTimer()
	var last paho.Token
	for i := range b.N {
		last = dev.Publish("bench/dev/temp", 1, false, fmt.Sprint(i))
	}
	if !last.WaitTimeout(60 * time.Second) {
		b.Fatal("publish timed out")
	}
	deadline := time.Now().Add(60 * time.Second)
	for n.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("handled %d of %d", n.Load(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
	msgsPerSec(b, b.N)
}
