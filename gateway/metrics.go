package gateway

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moongate/moongate/internal/memguard"
	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sync/sink"
	"github.com/moongate/moongate/sync/store"
)

// metrics are the gateway's Prometheus series, on a registry of its own (no global state:
// tests run several gateways in one process).
type metrics struct {
	reg         *prometheus.Registry
	invocations *prometheus.CounterVec
	durations   *prometheus.HistogramVec
	events      *prometheus.CounterVec
	mqttEvents  prometheus.Counter // events{source="mqtt"}, looked up once
	dropped     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	// logLinesDropped counts function log lines over luafn's Limits.LogLines or LogRate.
	logLinesDropped *prometheus.CounterVec
	// loopsStopped counts publishes refused past gateway.loops.max_hops, publishesDelayed
	// those that waited for gateway.loops.publish_rate.
	loopsStopped, publishesDelayed *prometheus.CounterVec
	commitErrors                   prometheus.Counter
	publishErrors                  prometheus.Counter
	authFailures                   prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moongate_invocations_total", Help: "Function invocations by result (ok or error).",
		}, []string{"function", "result"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "moongate_invocation_duration_seconds", Help: "Wall time of function invocations.",
			Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3, 100e-3, 1},
		}, []string{"function"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moongate_events_total", Help: "Events received, by source.",
		}, []string{"source"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moongate_events_dropped_total", Help: "Events dropped before they ran, by function and reason.",
		}, []string{"function", "reason"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moongate_dead_letters_total", Help: "Events that failed every try and went to $dead.",
		}, []string{"function"}),
		logLinesDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moongate_log_lines_dropped_total", Help: "Function log lines dropped: over the lines per invocation or per second.",
		}, []string{"function"}),
		loopsStopped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moongate_loop_publishes_refused_total", Help: "Function publishes refused: the chain of functions publishing to each other's triggers passed gateway.loops.max_hops.",
		}, []string{"function"}),
		publishesDelayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moongate_publishes_delayed_total", Help: "Function publishes that waited for the function's gateway.loops.publish_rate.",
		}, []string{"function"}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moongate_commit_errors_total", Help: "Invocation commits the store refused (e.g. disk full).",
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moongate_publish_errors_total", Help: "MQTT publishes from functions that failed after commit.",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moongate_console_auth_failures_total", Help: "API and live-stream requests with a wrong or missing token.",
		}),
	}
	m.mqttEvents = m.events.WithLabelValues("mqtt")
	m.reg.MustRegister(m.invocations, m.durations, m.events, m.dropped, m.deadLetters, m.logLinesDropped, m.loopsStopped, m.publishesDelayed, m.commitErrors, m.publishErrors,
		m.authFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// watchState adds the series read from the running parts when scraped; the gateway
// calls it once they are open.
func (m *metrics) watchState(c *stateCollector) { m.reg.MustRegister(c) }

// invocationSeries are one function's invocation series.
type invocationSeries struct {
	ok, failed prometheus.Counter
	duration   prometheus.Observer
}

func (m *metrics) invocationSeries(fn string) invocationSeries {
	return invocationSeries{ok: m.invocations.WithLabelValues(fn, "ok"), failed: m.invocations.WithLabelValues(fn, "error"),
		duration: m.durations.WithLabelValues(fn)}
}

func (s invocationSeries) observe(d time.Duration, err error) {
	if err != nil {
		s.failed.Inc()
	} else {
		s.ok.Inc()
	}
	s.duration.Observe(d.Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// stateCollector reads the outbox, the sinks and the broker when scraped, so the hot paths
// keep no gauges up to date.
type stateCollector struct {
	store     *store.Store
	sinks     []*sink.Sink
	bus       mqtt.Bus
	functions *registry
	mem       *memguard.Guard
}

var (
	descOutboxPending = prometheus.NewDesc("moongate_outbox_pending_records", "Records waiting in the outbox.", nil, nil)
	descOutboxBytes   = prometheus.NewDesc("moongate_outbox_pending_bytes", "Bytes waiting in the outbox.", nil, nil)
	descOutboxDropped = prometheus.NewDesc("moongate_outbox_dropped_total", "Outbox records dropped, by cause.", []string{"cause"}, nil)
	descSinkLag       = prometheus.NewDesc("moongate_sink_lag_seconds", "Age of the oldest record a sink has not delivered.", []string{"sink"}, nil)
	descSinkPending   = prometheus.NewDesc("moongate_sink_pending_records", "Records a sink still has to deliver.", []string{"sink"}, nil)
	descSinkDelivered = prometheus.NewDesc("moongate_sink_delivered_total", "Records a sink delivered.", []string{"sink"}, nil)
	descSinkRetried   = prometheus.NewDesc("moongate_sink_retried_total", "Deliveries a sink retried.", []string{"sink"}, nil)
	descSinkUp        = prometheus.NewDesc("moongate_sink_online", "1 when the sink's last delivery succeeded.", []string{"sink"}, nil)
	descSinkInfo      = prometheus.NewDesc("moongate_sink_info", "1 for each sink, labelled with its kind (http, mqtt, jetstream).", []string{"sink", "kind"}, nil)
	descBrokerClients = prometheus.NewDesc("moongate_broker_clients", "Devices connected to the embedded broker.", nil, nil)
	descBrokerRefused = prometheus.NewDesc("moongate_broker_refused_total",
		"What the embedded broker refused: logins with bad credentials, logins from throttled addresses, publishes and subscriptions the ACL denied, connections past the caps.",
		[]string{"reason"}, nil)
	descOversize  = prometheus.NewDesc("moongate_mqtt_oversize_packets_total", "Devices the embedded broker disconnected for a packet larger than mqtt.embedded.max_packet_size.", nil, nil)
	descLogLosses = prometheus.NewDesc("moongate_store_log_losses", "Log files (WAL or value log) the store's open found damaged: replay dropped what followed the damage (a copy is in the store's damaged/ dir).", nil, nil)
	descLogLost   = prometheus.NewDesc("moongate_store_log_lost_bytes", "Bytes of log the store's open dropped after damage: committed data lost.", nil, nil)
	descDamaged   = prometheus.NewDesc("moongate_store_damaged_tables", "Tables found damaged since the gateway started, by a read of a bad block or the background scrub: a read of a key in a bad block fails, a scan skips it; stop, run moongate store check, restore.", nil, nil)
	descSyncs     = prometheus.NewDesc("moongate_store_syncs_total", "Syncs (fsync) of the store's logs: about one per group of commits; fewer with gateway.durability: batch.", nil, nil)
	descFunctions = prometheus.NewDesc("moongate_functions", "Deployed functions.", nil, nil)
	descKVKeys    = prometheus.NewDesc("moongate_kv_keys", "Keys in a function's KV (gateway.kv_quota.keys bounds it).", []string{"function"}, nil)
	descKVBytes   = prometheus.NewDesc("moongate_kv_bytes", "Key and value bytes in a function's KV (gateway.kv_quota.bytes bounds it).", []string{"function"}, nil)
	descPressure  = prometheus.NewDesc("moongate_memory_pressure", "1 while the live heap is near gateway.memory_limit and new state is refused (retained messages, sessions, queued events), else 0.", nil, nil)
	descSessions  = prometheus.NewDesc("moongate_broker_sessions", "Persistent sessions the embedded broker holds, their devices connected or not.", nil, nil)
	descEvicted   = prometheus.NewDesc("moongate_broker_sessions_evicted_total", "Persistent sessions the embedded broker ended past its bounds, those whose devices went away longest ago first.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOutboxPending, descOutboxBytes, descOutboxDropped, descSinkLag,
		descSinkPending, descSinkDelivered, descSinkRetried, descSinkUp, descSinkInfo, descBrokerClients, descBrokerRefused, descOversize, descFunctions, descSessions, descEvicted, descPressure, descKVKeys, descKVBytes,
		descLogLosses, descLogLost, descDamaged, descSyncs} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.collectStore(ch)
	c.collectSinks(ch)
	c.collectBroker(ch)
	ch <- prometheus.MustNewConstMetric(descFunctions, prometheus.GaugeValue, float64(len(c.functions.all())))
	for _, v := range c.functions.all() {
		u := c.store.KVUsage(v.name)
		ch <- prometheus.MustNewConstMetric(descKVKeys, prometheus.GaugeValue, float64(u.Keys), v.name)
		ch <- prometheus.MustNewConstMetric(descKVBytes, prometheus.GaugeValue, float64(u.Bytes), v.name)
	}
	pressed := 0.0
	if c.mem.Pressed() {
		pressed = 1
	}
	ch <- prometheus.MustNewConstMetric(descPressure, prometheus.GaugeValue, pressed)
}

func (c *stateCollector) collectStore(ch chan<- prometheus.Metric) {
	st := c.store.Stats()
	ch <- prometheus.MustNewConstMetric(descOutboxPending, prometheus.GaugeValue, float64(st.PendingRecords))
	ch <- prometheus.MustNewConstMetric(descOutboxBytes, prometheus.GaugeValue, float64(st.PendingBytes))
	for cause, n := range dropsByCause(st.Dropped) {
		ch <- prometheus.MustNewConstMetric(descOutboxDropped, prometheus.CounterValue, float64(n), cause)
	}
	var lost int64
	for _, l := range st.LogLosses {
		lost += l.Bytes
	}
	ch <- prometheus.MustNewConstMetric(descLogLosses, prometheus.GaugeValue, float64(len(st.LogLosses)))
	ch <- prometheus.MustNewConstMetric(descLogLost, prometheus.GaugeValue, float64(lost))
	ch <- prometheus.MustNewConstMetric(descDamaged, prometheus.GaugeValue, float64(len(st.DamagedTables)))
	ch <- prometheus.MustNewConstMetric(descSyncs, prometheus.CounterValue, float64(st.Fsyncs))
}

func (c *stateCollector) collectSinks(ch chan<- prometheus.Metric) {
	for _, s := range c.sinks {
		st := s.Status()
		ch <- prometheus.MustNewConstMetric(descSinkLag, prometheus.GaugeValue, st.Lag.Seconds(), st.Name)
		ch <- prometheus.MustNewConstMetric(descSinkPending, prometheus.GaugeValue, float64(st.PendingRecords), st.Name)
		ch <- prometheus.MustNewConstMetric(descSinkDelivered, prometheus.CounterValue, float64(st.Delivered), st.Name)
		ch <- prometheus.MustNewConstMetric(descSinkRetried, prometheus.CounterValue, float64(st.Retried), st.Name)
		up := 0.0
		if st.State == "online" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descSinkUp, prometheus.GaugeValue, up, st.Name)
		ch <- prometheus.MustNewConstMetric(descSinkInfo, prometheus.GaugeValue, 1, st.Name, st.Kind)
	}
}

func (c *stateCollector) collectBroker(ch chan<- prometheus.Metric) {
	st := c.bus.Status()
	ch <- prometheus.MustNewConstMetric(descBrokerClients, prometheus.GaugeValue, float64(st.Clients))
	for reason, n := range map[string]uint64{"bad_credentials": st.AuthFailures, "throttled": st.LoginsThrottled,
		"acl": st.ACLDenied, "connection_cap": st.ConnectionsRefused, "retained_full": st.RetainRefused} {
		ch <- prometheus.MustNewConstMetric(descBrokerRefused, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(descOversize, prometheus.CounterValue, float64(st.Oversize))
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(st.Sessions))
	ch <- prometheus.MustNewConstMetric(descEvicted, prometheus.CounterValue, float64(st.SessionsEvicted))
}
