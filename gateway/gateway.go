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
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/gateway/console"
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
	metrics    *metrics
	hub        *console.Hub
	token      string

	// runCtx is cancelled when the gateway stops taking events; stopping is closed then.
	runCtx   context.Context
	stopping chan struct{}

	ready    chan struct{} // closed once listening; HTTPAddr is valid then
	httpAddr net.Addr

	mu             sync.Mutex
	watched        map[sensors.Watch]bool // gpio watches registered with the sensors
	sensorsRunning bool
}

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
	return g
}

// Ready is closed once the gateway accepts events and API requests.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// HTTPAddr is the console listener's address, valid after Ready.
func (g *Gateway) HTTPAddr() string { return g.httpAddr.String() }

// Run starts everything, serves until ctx is cancelled, then stops: it takes no new
// events, finishes or hands back the ones in flight, flushes, and returns.
func (g *Gateway) Run(ctx context.Context) (err error) {
	g.started = time.Now()
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	g.runCtx = runCtx

	if err := os.MkdirAll(g.cfg.Gateway.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	g.store, err = store.Open(store.Options{
		Dir:            filepath.Join(g.cfg.Gateway.DataDir, "store"),
		MaxOutboxBytes: int64(g.cfg.Sync.Outbox.MaxBytes),
		OutboxTTL:      g.cfg.Sync.Outbox.TTL,
		OnFull:         onFull(g.cfg.Sync.Outbox.OnFull),
		Logger:         g.logger.With("component", "store"),
	})
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
	g.hub = console.NewHub(console.HubOptions{
		Authorize: g.authorized,
		Matcher:   mqtt.Match,
		Logger:    g.logger.With("component", "live"),
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
	srv := &http.Server{Handler: g.handler(), ReadHeaderTimeout: 10 * time.Second}

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
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx) // websocket clients are closed with the hub
	wg.Wait()
	g.logger.Info("stopped")
	return err
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
}

// restoreFunctions brings back what was deployed before the restart, and deploys the
// config's functions where the config changed since (console deploys survive a restart
// unless the config entry of the same function was edited).
func (g *Gateway) restoreFunctions() error {
	inConfig := map[string]bool{}
	for _, f := range g.cfg.Functions {
		inConfig[f.Name] = true
		spec := specFromConfig(g.cfg, f)
		vs, err := g.versions(f.Name)
		if err != nil {
			return err
		}
		if restored, err := g.restoreIfUnchanged(f.Name, spec.ConfigHash, vs); err != nil || restored {
			return err
		}
		if _, err := g.registry.deploy(spec); err != nil {
			return fmt.Errorf("%w", g.cfg.Errorf(fmt.Sprintf("functions[%d]", indexOf(g.cfg, f.Name)), "%v", err))
		}
	}
	active, err := g.store.Active()
	if err != nil {
		return fmt.Errorf("read deployed functions: %w", err)
	}
	for name, n := range active {
		if inConfig[name] {
			continue
		}
		vs, err := g.versions(name)
		if err != nil {
			return err
		}
		if err := g.restoreVersion(name, n, vs); err != nil {
			g.logger.Error("deployed function not restored", "function", name, "version", n, "err", err)
		}
	}
	return nil
}

func indexOf(c *config.Config, name string) int {
	for i, f := range c.Functions {
		if f.Name == name {
			return i
		}
	}
	return 0
}

// restoreIfUnchanged restores the active version when the config's entry is the one last
// deployed from the config.
func (g *Gateway) restoreIfUnchanged(name, hash string, vs []FunctionSpec) (bool, error) {
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].ConfigHash == "" {
			continue
		}
		if vs[i].ConfigHash != hash {
			return false, nil
		}
		active, err := g.store.Active()
		if err != nil {
			return false, fmt.Errorf("read deployed functions: %w", err)
		}
		n, ok := active[name]
		if !ok {
			return false, nil
		}
		return true, g.restoreVersion(name, n, vs)
	}
	return false, nil
}

func (g *Gateway) restoreVersion(name string, n int, vs []FunctionSpec) error {
	for _, s := range vs {
		if s.Version != n {
			continue
		}
		v, err := g.registry.build(s, nil)
		if err != nil {
			return fmt.Errorf("restore %s version %d: %w", name, n, err)
		}
		g.registry.activate(name, v, g.registry.entry(name))
		return nil
	}
	return fmt.Errorf("restore %s: version %d is not stored", name, n)
}

func (r *registry) stopAll() {
	r.m.Range(func(_, e any) bool {
		e.(*entry).exec.stop()
		return true
	})
}
