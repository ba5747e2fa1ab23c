// Command devsim simulates MQTT temperature sensors. It publishes readings for N devices to
// any broker, at a given rate or as fast as the broker acknowledges them, and doubles as
// Moongate's load generator: with -watch it also counts what comes back (e.g. alerts/#).
//
//	devsim -broker tcp://127.0.0.1:1883 -devices 5 -rate 2
//	devsim -devices 50 -rate 0 -qos 1 -duration 10s -watch 'alerts/#'   # full rate
//	devsim -devices 50 -rate 0 -qos 1 -duration 10s -latency            # and ack latency percentiles
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

type options struct {
	broker   string
	devices  int
	rate     float64 // messages per second per device; 0 = as fast as acks allow
	count    int     // messages per device; 0 = until duration or signal
	duration time.Duration
	qos      int
	topic    string
	prefix   string
	watch    string
	window   int
	base     float64
	amp      float64
	period   int
	latency  bool
	linger   time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.broker, "broker", "tcp://127.0.0.1:1883", "broker URL")
	flag.IntVar(&o.devices, "devices", 3, "number of simulated devices (one connection each)")
	flag.Float64Var(&o.rate, "rate", 1, "readings per second per device; 0 publishes as fast as the broker acknowledges")
	flag.IntVar(&o.count, "count", 0, "readings per device, then stop (0: no limit)")
	flag.DurationVar(&o.duration, "duration", 0, "stop after this long (0: no limit)")
	flag.IntVar(&o.qos, "qos", 1, "QoS of the readings (0 or 1)")
	flag.StringVar(&o.topic, "topic", "sensors/{device}/temp", "topic template")
	flag.StringVar(&o.prefix, "prefix", "dev", "device id prefix")
	flag.StringVar(&o.watch, "watch", "", "also subscribe to this filter and count what arrives (e.g. alerts/#)")
	flag.IntVar(&o.window, "window", 32, "QoS 1 publishes in flight per device at full rate")
	flag.Float64Var(&o.base, "base", 25, "mean temperature")
	flag.Float64Var(&o.amp, "amp", 8, "temperature swing around the mean")
	flag.IntVar(&o.period, "period", 20, "readings per full swing")
	flag.DurationVar(&o.linger, "linger", 0, "with -watch: after publishing, count what arrives until nothing did for this long (0: wait 500ms); the rate excludes it")
	flag.BoolVar(&o.latency, "latency", false, "also print percentiles of the QoS 1 ack latency (publish to PUBACK)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, o, logger); err != nil {
		logger.Error("devsim failed", "err", err)
		os.Exit(1)
	}
}

// Reading is what a simulated device publishes.
type Reading struct {
	Device string  `json:"device"`
	Seq    int     `json:"seq"`
	Temp   float64 `json:"temp"`
	TS     int64   `json:"ts"`
}

// temperature is deterministic, so a run's alerts can be predicted: a sine swing around base.
func (o options) temperature(seq int) float64 {
	v := o.base + o.amp*math.Sin(2*math.Pi*float64(seq)/float64(o.period))
	return math.Round(v*10) / 10
}

func run(ctx context.Context, o options, logger *slog.Logger) error {
	var sent, acked, failed, watched atomic.Int64
	var lastWatched atomic.Int64 // unix ns of the last message watched
	var lat *latencies
	if o.latency {
		lat = &latencies{}
	}
	start := time.Now()

	if o.watch != "" {
		w, err := connect(o.broker, o.prefix+"-watch")
		if err != nil {
			return err
		}
		defer w.Disconnect(250)
		t := w.Subscribe(o.watch, 1, func(paho.Client, paho.Message) {
			watched.Add(1)
			lastWatched.Store(time.Now().UnixNano())
		})
		if t.Wait(); t.Error() != nil {
			return fmt.Errorf("subscribe %s: %w", o.watch, t.Error())
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, o.devices)
	for d := 1; d <= o.devices; d++ {
		id := fmt.Sprintf("%s-%d", o.prefix, d)
		c, err := connect(o.broker, id)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Disconnect(250)
			if err := o.device(ctx, c, id, &sent, &acked, &failed, lat); err != nil {
				errs <- err
			}
		}()
	}
	progress := time.NewTicker(2 * time.Second)
	defer progress.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-progress.C:
			logger.Info("devsim", "sent", sent.Load(), "acked", acked.Load(), "watched", watched.Load())
		}
	}
	el := time.Since(start).Seconds()
	if o.watch != "" && o.linger > 0 {
		// A gateway behind an external broker may still be working through its queue.
		ended := time.Now().UnixNano()
		for time.Since(time.Unix(0, max(lastWatched.Load(), ended))) < o.linger {
			time.Sleep(o.linger / 10)
		}
	} else if o.watch != "" {
		time.Sleep(500 * time.Millisecond) // let the last replies arrive
		el = time.Since(start).Seconds()
	}
	fmt.Printf("devices=%d sent=%d acked=%d failed=%d watched=%d seconds=%.2f rate=%.0f/s\n",
		o.devices, sent.Load(), acked.Load(), failed.Load(), watched.Load(), el, float64(acked.Load())/el)
	if lat != nil {
		fmt.Println(lat.summary())
	}
	close(errs)
	return <-errs
}

func connect(broker, id string) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(250 * time.Millisecond).SetMaxResumePubInFlight(64).
		SetWriteTimeout(10 * time.Second)
	c := paho.NewClient(opts)
	t := c.Connect()
	if !t.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s as %s: timed out", broker, id)
	}
	if t.Error() != nil {
		return nil, fmt.Errorf("connect %s as %s: %w", broker, id, t.Error())
	}
	return c, nil
}

func (o options) device(ctx context.Context, c paho.Client, id string, sent, acked, failed *atomic.Int64, lat *latencies) error {
	topic := strings.ReplaceAll(o.topic, "{device}", id)
	var tick <-chan time.Time
	if o.rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / o.rate))
		defer t.Stop()
		tick = t.C
	}
	window := make(chan struct{}, max(o.window, 1))
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for seq := 1; o.count == 0 || seq <= o.count; seq++ {
		if tick != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-tick:
			}
		} else {
			select {
			case <-ctx.Done():
				return nil
			case window <- struct{}{}:
			}
		}
		body, err := json.Marshal(Reading{Device: id, Seq: seq, Temp: o.temperature(seq), TS: time.Now().UnixMilli()})
		if err != nil {
			return err
		}
		at := time.Now()
		tok := c.Publish(topic, byte(o.qos), false, body)
		sent.Add(1)
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			if tick == nil {
				defer func() { <-window }()
			}
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				failed.Add(1)
				return
			}
			acked.Add(1)
			if lat != nil {
				lat.add(time.Since(at))
			}
		}()
	}
	return ctx.Err() // nil when count was reached
}

// latencies collects ack latencies, for percentiles at the end.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return "latency: no acks"
	}
	slices.Sort(l.d)
	p := func(q float64) time.Duration {
		return l.d[min(len(l.d)-1, int(q*float64(len(l.d))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("latency acks=%d p50=%v p90=%v p99=%v max=%v", len(l.d), p(0.50), p(0.90), p(0.99), l.d[len(l.d)-1].Round(10*time.Microsecond))
}
