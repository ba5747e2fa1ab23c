package sink

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/moongate/moongate/internal/natstest"
	"github.com/moongate/moongate/sync/store"
	"github.com/moongate/moongate/sync/store/storetest"
)

// benchData is a typical sensor record, with values that vary as real ones
// do (identical records would make gzip look too good).
func benchData(i int) []byte {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	return fmt.Appendf(nil, `{"sensor":"kitchen-%d","temp":%.2f,"hum":%.1f,"pressure":%.2f,"battery":%.2f,"seq":%d}`,
		i%8, 15+10*r.Float64(), 30+40*r.Float64(), 990+40*r.Float64(), 3+r.Float64(), i)
}

func appendBench(b *testing.B, st *store.Store, stream string, n int) {
	b.Helper()
	for i := 0; i < n; {
		k := min(200, n-i)
		recs := make([]store.Append, k)
		for j := range recs {
			recs[j] = store.Append{Stream: stream, Function: "env", Data: benchData(i + j), TS: time.Now().UnixMilli()}
		}
		if _, err := st.Append(context.Background(), recs...); err != nil {
			b.Fatal(err)
		}
		i += k
	}
}

// sinkServer is a minimal local receiver: it reads each body and answers
// 200, counting the bytes it reads off the connections.
func sinkServer(b *testing.B) (url string, bytesIn *int64) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	var mu sync.Mutex
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	})}
	go srv.Serve(&countingListener{Listener: ln, n: &n, mu: &mu})
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/ingest", &n
}

// drain runs s until the stream is delivered and returns the time it took.
func drain(b *testing.B, s *Sink, st *store.Store, consumer, stream string) time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	for st.Stats().Consumers[consumer][stream].Pending > 0 {
		time.Sleep(time.Millisecond)
	}
	d := time.Since(start)
	cancel()
	<-done
	return d
}

// BenchmarkHTTPDrain drains a backlog to a local receiver with the default
// batching (500 records, 256 KiB, window 4), in the Moongate format and as
// batched CloudEvents, plain and gzipped. One op is one record; for 100k
// records run it with -benchtime=100000x.
func BenchmarkHTTPDrain(b *testing.B) {
	for _, format := range []string{FormatMoongate, FormatCloudEvents} {
		for _, gz := range []string{"off", "on"} {
			b.Run("format="+format+"/gzip="+gz, func(b *testing.B) {
				st := storetest.Open(b, b.TempDir())
				defer st.Close()
				url, bytesIn := sinkServer(b)
				s := newSink(b, Config{Name: "cloud", GatewayID: "pi-kitchen",
					HTTP: &HTTPConfig{URL: url, Gzip: gz, HMACSecret: "k", Format: format}}, st, nil, nil)
				appendBench(b, st, "telemetry", b.N)
				b.ResetTimer()
				d := drain(b, s, st, "cloud", "telemetry")
				b.StopTimer()
				b.ReportMetric(float64(b.N)/d.Seconds(), "records/s")
				b.ReportMetric(float64(*bytesIn)/float64(b.N), "wire-bytes/record")
			})
		}
	}
}

// BenchmarkJetStreamDrain drains a backlog to a JetStream stream on a local
// nats-server (R1), and on a local three-node cluster (R3). One op is one
// record; each run starts its servers, so give it a count:
// -benchtime=100000x.
func BenchmarkJetStreamDrain(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("R%d", nodes), func(b *testing.B) {
			c := natstest.Start(b, nodes)
			js := c.Client()
			stream := natstest.CreateStream(b, js, jetstream.StreamConfig{Name: "MOONGATE", Subjects: []string{"moongate.>"}, Replicas: nodes})
			st := storetest.Open(b, b.TempDir())
			defer st.Close()
			s := newSink(b, Config{Name: "nats", GatewayID: "pi-kitchen", JetStream: &JetStreamConfig{URL: c.URLs()}}, st, nil, nil)
			appendBench(b, st, "telemetry", b.N)
			b.ResetTimer()
			d := drain(b, s, st, "nats", "telemetry")
			b.StopTimer()
			b.ReportMetric(float64(b.N)/d.Seconds(), "records/s")
			if info, err := stream.Info(context.Background()); err == nil && info.State.Msgs > 0 {
				b.ReportMetric(float64(info.State.Bytes)/float64(info.State.Msgs), "stored-bytes/record")
			}
		})
	}
}

// BenchmarkMQTTDrain drains a backlog to a local Mosquitto at QoS 1 over
// TLS with client certificates. One op is one record.
func BenchmarkMQTTDrain(b *testing.B) {
	br := startBroker(b)
	st := storetest.Open(b, b.TempDir())
	defer st.Close()
	s := newSink(b, Config{Name: "iot", GatewayID: "pi-kitchen", MQTT: &MQTTConfig{
		Broker: br.url(), TLS: TLSFiles{CA: br.pki.CA, Cert: br.pki.ClientCert, Key: br.pki.ClientKey},
	}}, st, nil, nil)
	appendBench(b, st, "telemetry", b.N)
	b.ResetTimer()
	d := drain(b, s, st, "iot", "telemetry")
	b.StopTimer()
	b.ReportMetric(float64(b.N)/d.Seconds(), "records/s")
}

// BenchmarkBacklogWithLiveTraffic measures how long a 100k-record backlog
// takes to drain to a local receiver while live records keep arriving at
// about 2000 a second. Run it with -benchtime=1x.
func BenchmarkBacklogWithLiveTraffic(b *testing.B) {
	for range b.N {
		b.StopTimer()
		st := storetest.Open(b, b.TempDir())
		url, _ := sinkServer(b)
		s := newSink(b, Config{Name: "cloud", GatewayID: "pi-kitchen", HTTP: &HTTPConfig{URL: url}}, st, nil, nil)
		const backlog = 100_000
		appendBench(b, st, "telemetry", backlog)
		ctx, cancel := context.WithCancel(context.Background())
		var live atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					recs := make([]store.Append, 20)
					for i := range recs {
						recs[i] = store.Append{Stream: "telemetry", Function: "env", Data: benchData(i)}
					}
					if _, err := st.Append(ctx, recs...); err == nil {
						live.Add(20)
					}
				}
			}
		})
		b.StartTimer()
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.Run(ctx)
		}()
		for {
			if c, _ := st.Cursor("cloud", "telemetry"); c >= backlog {
				break
			}
			time.Sleep(time.Millisecond)
		}
		d := time.Since(start)
		b.StopTimer()
		cancel()
		<-done
		wg.Wait()
		st.Close()
		b.ReportMetric(d.Seconds(), "s/backlog")
		b.ReportMetric(float64(live.Load())/d.Seconds(), "live-records/s")
	}
}

// BenchmarkHTTPDrainRTT drains through a proxy that delays every chunk by
// 10ms each way (a 20ms round trip, a nearby cloud region), with one batch
// in flight and with the default window of 4 pipelined on one connection.
// Batches of 100 records, so that the round trip dominates.
func BenchmarkHTTPDrainRTT(b *testing.B) {
	for _, window := range []int{1, 4} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			st := storetest.Open(b, b.TempDir())
			defer st.Close()
			url, _ := sinkServer(b)
			url = delayProxy(b, strings.TrimPrefix(strings.TrimSuffix(url, "/ingest"), "http://"), 10*time.Millisecond)
			s := newSink(b, Config{Name: "cloud", GatewayID: "pi-kitchen", Window: window, Batch: Batch{MaxRecords: 100},
				HTTP: &HTTPConfig{URL: url + "/ingest"}}, st, nil, nil)
			appendBench(b, st, "telemetry", b.N)
			b.ResetTimer()
			d := drain(b, s, st, "cloud", "telemetry")
			b.StopTimer()
			b.ReportMetric(float64(b.N)/d.Seconds(), "records/s")
		})
	}
}

// delayProxy forwards TCP to upstream, delivering every chunk delay after
// it was read, in order, in both directions.
func delayProxy(b *testing.B, upstream string, delay time.Duration) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			go pipeDelayed(c, u, delay)
			go pipeDelayed(u, c, delay)
		}
	}()
	return "http://" + ln.Addr().String()
}

func pipeDelayed(from, to net.Conn, delay time.Duration) {
	type chunk struct {
		data []byte
		due  time.Time
	}
	q := make(chan chunk, 1024)
	go func() {
		defer to.Close()
		for c := range q {
			time.Sleep(time.Until(c.due))
			if _, err := to.Write(c.data); err != nil {
				return
			}
		}
	}()
	defer close(q)
	buf := make([]byte, 64<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			q <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(delay)}
		}
		if err != nil {
			return
		}
	}
}
