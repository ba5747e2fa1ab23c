// Package gateway wires Moongate together: the MQTT bus, the sensors, the Lua functions,
// the store and the sinks, the HTTP API and the live console. The leaves do not know each
// other; everything that crosses between them passes through here.
package gateway

import (
	"context"
	"encoding/json"
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
}

// pinIO is what functions and the console need of the sensors: the pins.
type pinIO interface {
	WritePin(pin string, level int) error
	ReadPin(pin string) (int, error)
}

// Gateway is one running Moongate.
type Gateway struct {
	cfg     *config.Config
	opts    Options
	logger  *slog.Logger
	started time.Time

	store   *store.Store
	bus     mqtt.Bus
	sensors *sensors.Manager
	// sensorCfgs are the decoded sensors: entries, for the status API's pin details.
	sensorCfgs map[string]sensors.Config
	pins       pinIO
	// outputPins are the pins (and their sensor names) declared mode: out: the only ones
	// gpio.write may drive.
	outputPins []string
	sinks      []*sink.Sink
	registry   *registry
	router     *router
	live       *live
	loopLog    *throttle.Failures // logs a function's stopped loops once a minute
	mem        *memguard.Guard    // the live heap against gateway.memory_limit
	metrics    *metrics
	hub        *console.Hub
	token      string
	guard      *guard

	// runCtx is cancelled when the gateway stops taking events; stopping is closed then.
	runCtx   context.Context
	stopping chan struct{}

	ready    chan struct{} // closed once listening; HTTPAddr is valid then
	httpAddr net.Addr

	mu             sync.Mutex
	watched        map[sensors.Watch]bool // gpio watches registered with the sensors
	sensorsRunning bool
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
	g := &Gateway{cfg: cfg, opts: opts, logger: opts.Logger, stopping: make(chan struct{}), ready: make(chan struct{}),
		watched: map[sensors.Watch]bool{}}
	g.registry = &registry{g: g}
	g.router = newRouter(g)
	g.metrics = newMetrics(g)
	g.loopLog = throttle.New(1, time.Minute)
	g.mem = memguard.New(func(pressed bool, live, limit int64) {
		if pressed {
			g.logger.Warn("short of memory: refusing new state (devices wait sooner, retained messages are not kept, new persistent sessions end idle ones) until the live heap drops",
				"live_heap", live, "memory_limit", limit)
		} else {
			g.logger.Info("memory back under its limit: new state is taken again", "live_heap", live, "memory_limit", limit)
		}
	})
	return g
}

// Ready is closed once the gateway accepts events and API requests.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Reload reads again what can change while the gateway runs: the embedded broker's
// password and ACL files. Everything else needs a restart.
func (g *Gateway) Reload() error {
	select {
	case <-g.ready:
	default:
		return errors.New("reload: the gateway is not running yet")
	}
	if r, ok := g.bus.(interface{ Reload() error }); ok {
		return r.Reload()
	}
	return nil
}

// HTTPAddr is the console listener's address, valid after Ready.
func (g *Gateway) HTTPAddr() string { return g.httpAddr.String() }

// Run starts everything, serves until ctx is cancelled, then stops: it takes no new
// events, finishes or hands back the ones in flight, flushes, and returns.
// memCheckInterval is how often the live heap is read (internal/memguard): often enough
// to refuse a flood's state before the limit, cheap (runtime/metrics does not stop the
// world).
const memCheckInterval = 250 * time.Millisecond

func (g *Gateway) Run(ctx context.Context) (err error) {
	g.started = time.Now()
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	g.runCtx = runCtx

	if err := atomicfile.MkdirAll(g.cfg.Gateway.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	g.store, err = store.Open(StoreOptions(g.cfg, g.logger.With("component", "store")))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer func() {
		if cerr := g.store.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store: %w", cerr)
		}
	}()

	if g.token, err = g.resolveToken(); err != nil {
		return err
	}
	if err := g.openSensors(); err != nil {
		return err
	}
	defer func() { // after Run's goroutines are done (wg.Wait below) or a failed start
		if cerr := g.sensors.Close(); cerr != nil {
			g.logger.Warn("close sensors", "err", cerr)
		}
	}()
	g.guard = newGuard(g.cfg.Gateway.Console.Hosts, g.cfg.Gateway.Console.AllowedOrigins)
	g.hub = console.NewHub(console.HubOptions{
		Authorize:      g.authorized,
		AllowedOrigins: g.cfg.Gateway.Console.AllowedOrigins,
		Matcher:        mqtt.Match,
		Logger:         g.logger.With("component", "live"),
	})
	defer g.hub.Close()
	g.live = &live{hub: g.hub}

	if err := g.restoreFunctions(); err != nil {
		return err
	}
	if err := g.openSinks(); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", g.cfg.Gateway.Console.Listen)
	if err != nil {
		return fmt.Errorf("console: %w", err) // "listen tcp ADDR: ..." names the address
	}
	g.httpAddr = ln.Addr()
	ln = connlimit.Listen(ln, &connlimit.Limiter{Max: consoleMaxConns, PerHost: consoleMaxConnsPerHost})
	srv := &http.Server{Handler: g.handler(), ReadHeaderTimeout: 10 * time.Second,
		// A client that sends or reads a request slowly, or keeps an idle connection,
		// holds a file descriptor: bound all three (the live stream's websocket is
		// hijacked and keeps its own deadlines).
		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 60 * time.Second,
		ErrorLog: slog.NewLogLogger(g.logger.With("component", "console").Handler(), slog.LevelDebug)}

	if g.bus, err = g.openBus(); err != nil {
		ln.Close()
		return err
	}
	// Subscriptions are in place before the bus takes its first message (SPEC §2).
	if err := g.bus.Start(runCtx, g.router.subscriptions(), g.router); err != nil {
		ln.Close()
		g.bus.Close()
		return fmt.Errorf("start mqtt: %w", err)
	}
	g.router.started()

	var wg sync.WaitGroup
	memCtx, stopMem := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.mem.Run(memCtx, memCheckInterval)
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
	for _, s := range g.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(sinkCtx); err != nil && sinkCtx.Err() == nil {
				g.logger.Error("sink stopped", "sink", s.Status().Name, "err", err)
			}
		}()
	}
	sensorCtx, stopSensors := context.WithCancel(context.WithoutCancel(ctx))
	g.mu.Lock()
	g.sensorsRunning = true
	g.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := g.sensors.Run(sensorCtx, g.router); err != nil && sensorCtx.Err() == nil {
			g.logger.Error("sensors stopped", "err", err)
		}
	}()
	g.logStarted()
	close(g.ready)

	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	g.logger.Info("stopping")

	// Stop taking events, then let each key finish the invocation it runs; what never ran
	// stays unacknowledged and is redelivered by the broker or the device.
	close(g.stopping)
	stopSensors()
	g.router.stop()
	g.registry.stopAll()
	cancelRun()
	if cerr := g.bus.Close(); cerr != nil {
		g.logger.Warn("close mqtt", "err", cerr)
	}
	stopSinks()
	stopMem()
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx) // websocket clients are closed with the hub
	wg.Wait()
	g.logger.Info("stopped")
	return err
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

func (g *Gateway) logStarted() {
	st := g.bus.Status()
	g.logger.Info("moongate started", "version", g.opts.Version, "gateway", g.cfg.Gateway.ID,
		"console", "http://"+g.httpAddr.String(), "mqtt", st.Broker, "data_dir", g.cfg.Gateway.DataDir)
	for _, v := range g.registry.all() {
		g.logger.Info("function ready", "function", v.name, "version", v.number, "triggers", v.spec.Triggers)
	}
	for _, s := range g.sinks {
		g.logger.Info("sink ready", "sink", s.Status().Name)
	}
	g.warnUnrouted()
}

// restoreFunctions brings back every function that was active before the stop, at the
// version it ran, and applies the config on top (README, "Functions across restarts"):
//   - a config entry that is new, or changed since the last start, is deployed as its
//     function's next version;
//   - an unchanged entry leaves its function as it was: at the version it ran (maybe one
//     deployed through the API since), or deleted, if it was deleted through the API;
//   - a function whose active version came from the config, and whose entry is gone from
//     the config, is deleted (its history and KV stay).
//
// Every new config version is built before any is stored: a config refused once leaves
// the store as it was, and is refused again, with every error at once.
func (g *Gateway) restoreFunctions() error {
	active, err := g.store.Active()
	if err != nil {
		return fmt.Errorf("read deployed functions: %w", err)
	}
	applied, recorded, err := g.appliedConfig()
	if err != nil {
		return err
	}
	inConfig := map[string]string{} // name -> config hash
	var deploys []*version
	var errs config.ErrorList
	now := time.Now().UTC()
	for i, f := range g.cfg.Functions {
		spec := specFromConfig(f)
		inConfig[f.Name] = spec.ConfigHash
		latest, err := g.store.LatestVersion(f.Name)
		if err != nil {
			return err
		}
		h := applied[f.Name]
		if !recorded { // a data dir from before the record: the newest config version tells
			vs, err := g.versions(f.Name)
			if err != nil {
				return err
			}
			if last := lastFromConfig(vs); last != nil {
				h = last.ConfigHash
			}
		}
		if h == spec.ConfigHash {
			if _, ok := active[f.Name]; !ok {
				g.logger.Info("function stays deleted: it was deleted through the API; edit its entry in the config to deploy it again",
					"function", f.Name)
			}
			continue
		}
		spec.Version, spec.Created = latest+1, now
		v, err := g.registry.build(spec)
		if err != nil {
			errs = append(errs, g.cfg.Errorf(fmt.Sprintf("functions[%d]", i), "%v", err))
			continue
		}
		deploys = append(deploys, v)
	}
	if len(errs) > 0 {
		for _, v := range deploys {
			v.fn.Close()
		}
		return errs
	}
	redeployed := map[string]bool{}
	for _, v := range deploys {
		redeployed[v.name] = true
	}
	for name, n := range active {
		if redeployed[name] {
			continue
		}
		s, ok, err := g.storedVersion(name, n)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("restore %s: its active version %d is not stored", name, n)
		}
		if _, ok := inConfig[name]; !ok && s.ConfigHash != "" {
			if err := g.store.DeleteFunction(name); err != nil {
				return fmt.Errorf("delete %s, removed from the config: %w", name, err)
			}
			g.logger.Info("function deleted: it was removed from the config", "function", name, "version", n)
			continue
		}
		v, err := g.registry.build(s)
		if err != nil {
			return fmt.Errorf("restore %s version %d: %w", name, n, err)
		}
		g.registry.activate(v)
	}
	for _, v := range deploys {
		if err := g.registry.install(v); err != nil {
			return err
		}
	}
	// Recorded last: a crash before this line deploys the changed entries again at the
	// next start (a spare version), never skips one.
	return g.recordAppliedConfig(inConfig)
}

// appliedConfigKey holds the config hash of every functions: entry at the last start, so
// that an entry removed and added again is deployed again, while an unchanged entry whose
// function was deleted through the API stays deleted.
const appliedConfigKey = "config/functions"

func (g *Gateway) appliedConfig() (applied map[string]string, recorded bool, err error) {
	blob, ok, err := g.store.GetMeta(appliedConfigKey)
	if err != nil || !ok {
		return nil, false, err
	}
	if err := json.Unmarshal(blob, &applied); err != nil {
		return nil, false, fmt.Errorf("decode the applied config: %w", err)
	}
	return applied, true, nil
}

func (g *Gateway) recordAppliedConfig(hashes map[string]string) error {
	blob, err := json.Marshal(hashes)
	if err != nil {
		return fmt.Errorf("encode the applied config: %w", err)
	}
	if err := g.store.PutMeta(appliedConfigKey, blob); err != nil {
		return fmt.Errorf("record the applied config: %w", err)
	}
	return nil
}

// lastFromConfig is the newest version deployed from the config, or nil.
func lastFromConfig(vs []FunctionSpec) *FunctionSpec {
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].ConfigHash != "" {
			return &vs[i]
		}
	}
	return nil
}

func (r *registry) stopAll() {
	r.m.Range(func(_, e any) bool {
		e.(*entry).exec.stop()
		return true
	})
	r.retiring.Wait()
}
