// Package gateway wires Moongate together: the MQTT bus, the sensors, the Lua functions,
// the store and the sinks, the HTTP API and the live console. The leaves do not know each
// other; everything that crosses between them passes through here.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/gateway/console"
	"github.com/moongate/moongate/internal/atomicfile"
	"github.com/moongate/moongate/internal/connlimit"
	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/internal/memguard"
	"github.com/moongate/moongate/internal/throttle"
	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sensors"
	"github.com/moongate/moongate/sync/sink"
	"github.com/moongate/moongate/sync/store"
)

// Options are the settings that do not come from moongate.yaml.
type Options struct {
	Version string       // shown by the API and the console
	Logger  *slog.Logger // nil: slog.Default()
	// AllowMissingHardware overrides the config's gateway.allow_missing_hardware when true.
	AllowMissingHardware bool
	// RetryBackoff is the wait before the first retry of a failed durable event; it doubles
	// per try up to 5s. Zero means 100ms.
	RetryBackoff time.Duration
	// Tests runs the tests attached to a deploy (PUT /api/v1/functions/{name} with tests,
	// POST .../test). Nil: such requests are refused, never deployed untested.
	Tests TestRunner
	// Clock is the time of events, records, versions and the console, of retries and
	// every: triggers, and it is handed to the sensors and the functions (kv TTLs, the
	// event clock). Nil: the real clock. Invocation durations are measured on the real one.
	Clock Clock
	// Executable is the path of the running moongate binary, symlinks resolved: a
	// self-update (POST /api/v1/self-update) writes the new one beside it. "": refused
	// (a gateway run by a test, or a new binary on trial).
	Executable string
}

// Clock is the gateway's time source (sensors.Clock has the same methods).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Gateway is one running Moongate: it opens the leaves, wires them, serves, and stops
// them in order. Each running part holds what it needs; none holds the Gateway.
type Gateway struct {
	cfg    *config.Config
	opts   Options
	logger *slog.Logger

	ready    chan struct{} // closed once listening; HTTPAddr is valid then
	httpAddr net.Addr
	staged   chan *StagedUpdate // a self-update was staged: Run stops and returns it

	// The running parts, set by Run before ready is closed (tests reach them through the
	// Gateway).
	store    *store.Store
	bus      mqtt.Bus
	pins     *sensors.Manager
	registry *registry
	metrics  *metrics
	hub      *console.Hub
}

// The console's connection caps: a browser opens a handful, the CLI one at a time; the
// broker has its own, larger ones.
const (
	consoleMaxConns        = 256
	consoleMaxConnsPerHost = 32
)

// New prepares a gateway from a loaded config. Nothing is opened until Run.
func New(cfg *config.Config, opts Options) *Gateway {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = 100 * time.Millisecond
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	return &Gateway{cfg: cfg, opts: opts, logger: opts.Logger, ready: make(chan struct{}), staged: make(chan *StagedUpdate, 1)}
}

// Ready is closed once the gateway accepts events and API requests.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Healthy returns nil when the gateway's event path can go on: its store's committer
// answers within ctx (a write or a sync that hangs holds every event that commits). It is
// for a supervisor's watchdog, after Ready. The network is not checked: a gateway that is
// offline is healthy, and keeps its events.
func (g *Gateway) Healthy(ctx context.Context) error {
	select {
	case <-g.ready:
	default:
		return errors.New("the gateway is not running yet")
	}
	return g.store.Ping(ctx)
}

// HTTPAddr is the console listener's address, valid after Ready.
func (g *Gateway) HTTPAddr() string { return g.httpAddr.String() }

// memCheckInterval is how often the live heap is read (internal/memguard): often enough
// to refuse a flood's state before the limit, cheap (runtime/metrics does not stop the
// world).
const memCheckInterval = 250 * time.Millisecond

// Run opens everything, serves until ctx is cancelled, then stops: it takes no new
// events, finishes or hands back the ones in flight, flushes, and returns.
func (g *Gateway) Run(ctx context.Context) (err error) {
	cfg, logger, clock := g.cfg, g.logger, g.opts.Clock
	started := clock.Now()
	// runCtx is cancelled when the gateway stops taking events; stopping is closed then.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	stopping := make(chan struct{})

	if err := atomicfile.MkdirAll(cfg.Gateway.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	st, err := store.Open(StoreOptions(cfg, logger.With(logkey.Component, "store")))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer func() {
		// A self-update tries the new binary on this store only if it closed cleanly.
		_, staged := err.(*StagedUpdate)
		if cerr := st.Close(); cerr != nil && (err == nil || staged) {
			err = fmt.Errorf("close store: %w", cerr)
		}
	}()
	token, err := resolveToken(cfg, logger)
	if err != nil {
		return err
	}
	sens, sensorCfgs, err := openSensors(cfg, g.opts.AllowMissingHardware, clock, logger)
	if err != nil {
		return err
	}
	defer func() { // after Run's goroutines are done (wg.Wait below) or a failed start
		if cerr := sens.Close(); cerr != nil {
			logger.Warn("close sensors", logkey.Err, cerr)
		}
	}()

	m := newMetrics()
	auth := newTokenAuth(token, m.authFailures, logger)
	hub := console.NewHub(console.HubOptions{
		Authorize:      auth.authorized,
		AllowedOrigins: cfg.Gateway.Console.AllowedOrigins,
		Matcher:        mqtt.Match,
		Logger:         logger.With(logkey.Component, "live"),
	})
	defer hub.Close()
	lv := &live{hub: hub, clock: clock}
	mem := newMemGuard(logger)

	bus, err := openBus(cfg, logger, mem.Pressed)
	if err != nil {
		return err
	}
	serving := false // from then on the stop sequence closes the bus in its turn
	defer func() {
		if !serving {
			bus.Close()
		}
	}()

	fw, err := openFirmware(cfg, bus, clock, lv, logger)
	if err != nil {
		return err
	}
	defer fw.close() // after Run's goroutines are done: the server reads the images
	m.reg.MustRegister(fw.collectors()...)
	comp := &compiler{sensors: sensorCfgs, watch: sens.Watch, watched: map[sensors.Watch]bool{},
		host: functionHost(cfg, st, sens, sensorCfgs, clock, functionLogs{logger: logger, dropped: m.logLinesDropped, live: lv}.log)}
	reg := &registry{store: st, build: comp.build, series: m.invocationSeries, limits: &cfg.Gateway, clock: clock, logger: logger}
	ha := newHomeAssistant(cfg, g.opts.Version, bus, sensorCfgs, sens, reg.all, logger)
	proc := &processor{store: st, bus: bus, pins: ha.pinWriter(sens), live: lv, metrics: m, logger: logger,
		loopLog: throttle.New(1, time.Minute), backoff: g.opts.RetryBackoff,
		lazyCommits: cfg.Gateway.Durability == config.DurabilityBatch, maxHops: cfg.Gateway.Loops.MaxHops,
		clock: clock, ctx: runCtx, stopping: stopping}
	reg.exec = &executorEnv{ctx: runCtx, stopping: stopping, dropped: m.dropped, pressed: mem.Pressed, process: proc.process}
	rt := newRouter(reg, m, lv, clock, logger)
	reg.changed = func() {
		rt.rebuild()
		ha.functionsChanged()
	}
	if err := ha.watchInputs(comp.addWatch); err != nil {
		return err
	}
	if err := reg.restore(cfg); err != nil {
		return err
	}
	sinks, err := openSinks(cfg, st, bus, lv, clock, logger)
	if err != nil {
		return err
	}
	fl, err := openFleet(cfg, reg, st, clock, logger)
	if err != nil {
		return err
	}
	m.watchState(&stateCollector{store: st, sinks: sinks, bus: bus, functions: reg, mem: mem})

	ln, err := net.Listen("tcp", cfg.Gateway.Console.Listen)
	if err != nil {
		return fmt.Errorf("console: %w", err) // "listen tcp ADDR: ..." names the address
	}
	g.httpAddr = ln.Addr()
	ln = connlimit.Listen(ln, &connlimit.Limiter{Max: consoleMaxConns, PerHost: consoleMaxConnsPerHost})
	a := &api{cfg: cfg, version: g.opts.Version, tests: g.opts.Tests, clock: clock, started: started, store: st, bus: bus,
		sensors: sens, sensorCfgs: sensorCfgs, sinks: sinks, registry: reg, proc: proc, live: lv, hub: hub, auth: auth,
		guard: newGuard(cfg.Gateway.Console.Hosts, cfg.Gateway.Console.AllowedOrigins), metrics: m, firmware: fw, fleet: fl, logger: logger,
		selfUpdate: &selfUpdater{cfg: cfg, exe: g.opts.Executable, clock: clock, staged: g.staged,
			logger: logger.With(logkey.Component, "self-update")}}
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second,
		// A client that sends or reads a request slowly, or keeps an idle connection,
		// holds a file descriptor: bound all three (the live stream's websocket is
		// hijacked and keeps its own deadlines).
		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 60 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.With(logkey.Component, "console").Handler(), slog.LevelDebug)}

	// Subscriptions are in place before the bus takes its first message (SPEC §2).
	subs := append(append(rt.subscriptions(), ha.subscriptions()...), fw.subscriptions()...)
	if err := bus.Start(runCtx, subs, fw.messageHandler(ha.messageHandler(rt))); err != nil {
		ln.Close()
		return fmt.Errorf("start mqtt: %w", err)
	}
	serving = true
	rt.start(bus)

	var wg sync.WaitGroup
	memCtx, stopMem := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(1)
	go func() {
		defer wg.Done()
		mem.Run(memCtx, memCheckInterval)
	}()
	serveErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("console: %w", err)
		}
	}()
	sinkCtx, stopSinks := context.WithCancel(context.WithoutCancel(ctx))
	for _, s := range sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(sinkCtx); err != nil && sinkCtx.Err() == nil {
				logger.Error("sink stopped", logkey.Sink, s.Status().Name, logkey.Err, err)
			}
		}()
	}
	sensorCtx, stopSensors := context.WithCancel(context.WithoutCancel(ctx))
	comp.sensorsStarted()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := sens.Run(sensorCtx, ha.sensorHandler(rt)); err != nil && sensorCtx.Err() == nil {
			logger.Error("sensors stopped", logkey.Err, err)
		}
	}()
	if ha != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ha.run(sensorCtx) // stops with the sensors, whose states it publishes
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		fw.run(runCtx) // ends when the gateway stops taking events
	}()
	fleetCtx, stopFleet := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFleet()
	if fl != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fl.run(fleetCtx)
		}()
	}
	g.store, g.bus, g.pins, g.registry, g.metrics, g.hub = st, bus, sens, reg, m, hub
	g.logStarted(bus.Status(), reg.all(), sinks)
	close(g.ready)

	var staged *StagedUpdate
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	case staged = <-g.staged:
	}
	logger.Info("stopping")

	// Stop taking events, then let each key finish the invocation it runs; what never ran
	// stays unacknowledged and is redelivered by the broker or the device.
	close(stopping)
	stopFleet() // no revision is applied while the functions stop
	if fl != nil {
		fl.wait()
	}
	stopSensors()
	rt.stop()
	reg.stopAll()
	cancelRun()
	if cerr := bus.Close(); cerr != nil {
		logger.Warn("close mqtt", logkey.Err, cerr)
	}
	stopSinks()
	stopMem()
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx) // websocket clients are closed with the hub
	wg.Wait()
	logger.Info("stopped")
	if err == nil && staged != nil {
		return staged // the store is closed by the deferred Close before the caller tries the new binary
	}
	return err
}

// newMemGuard watches the live heap against gateway.memory_limit, and says when the
// gateway starts and stops refusing new state.
func newMemGuard(logger *slog.Logger) *memguard.Guard {
	return memguard.New(func(pressed bool, live, limit int64) {
		if pressed {
			logger.Warn("short of memory: refusing new state (devices wait sooner, retained messages are not kept, new persistent sessions end idle ones) until the live heap drops",
				"live_heap", live, "memory_limit", limit)
		} else {
			logger.Info("memory back under its limit: new state is taken again", "live_heap", live, "memory_limit", limit)
		}
	})
}

// StoreOptions are the options the gateway opens its store with under cfg; `moongate
// store check` opens it the same way.
func StoreOptions(cfg *config.Config, logger *slog.Logger) store.Options {
	return store.Options{
		Dir:            filepath.Join(cfg.Gateway.DataDir, "store"),
		MaxOutboxBytes: int64(cfg.Sync.Outbox.MaxBytes),
		MaxStreamBytes: int64(cfg.Sync.Outbox.MaxStreamBytes),
		KVQuota:        store.KVQuota{Keys: cfg.Gateway.KVQuota.Keys, Bytes: int64(cfg.Gateway.KVQuota.Bytes)},
		OutboxTTL:      cfg.Sync.Outbox.TTL,
		OnFull:         onFull(cfg.Sync.Outbox.OnFull),
		BatchInterval:  batchInterval(cfg),
		Logger:         logger,
	}
}

// batchInterval is how long the store may hold a lazy commit unsynced: 0 (sync each)
// unless gateway.durability is batch.
func batchInterval(cfg *config.Config) time.Duration {
	if cfg.Gateway.Durability != config.DurabilityBatch {
		return 0
	}
	return cfg.Gateway.BatchInterval
}

func onFull(s string) store.OnFull {
	if s == "reject_new" {
		return store.RejectNew
	}
	return store.DropOldest
}

func (g *Gateway) logStarted(bus mqtt.Status, functions []*version, sinks []*sink.Sink) {
	g.logger.Info("moongate started", "moongate", g.opts.Version, "gateway", g.cfg.Gateway.ID,
		"console", "http://"+g.httpAddr.String(), "mqtt", bus.Broker, "data_dir", g.cfg.Gateway.DataDir)
	for _, v := range functions {
		g.logger.Info("function ready", logkey.Function, v.name, logkey.Version, v.number, "triggers", v.spec.Triggers)
	}
	for _, s := range sinks {
		g.logger.Info("sink ready", logkey.Sink, s.Status().Name)
	}
	warnUnrouted(g.cfg, functions, g.logger)
}
