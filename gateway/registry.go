package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/sync/store"
)

// functionSpec is a deployable function: what the config's functions: entry and the API's
// PUT body describe. It is stored, one per version, as JSON.
type functionSpec struct {
	Name        string            `json:"name"`
	Version     int               `json:"version"`
	Source      string            `json:"source"`
	Filename    string            `json:"filename,omitempty"`
	Triggers    []string          `json:"triggers"`
	Timeout     time.Duration     `json:"timeout"`
	Memory      int64             `json:"memory"`
	Concurrency int               `json:"concurrency"`
	Retries     int               `json:"retries"`
	Env         map[string]string `json:"env,omitempty"`
	Emit        string            `json:"emit,omitempty"`
	Overflow    string            `json:"overflow,omitempty"` // "" is config.OverflowBlock
	Created     time.Time         `json:"created"`
	RollbackOf  int               `json:"rollback_of,omitempty"`
	// TestsPassed is how many test cases this version passed before it went live (a
	// deploy with tests attached); 0 for an untested deploy.
	TestsPassed int `json:"tests_passed,omitempty"`
	// ConfigHash is set on versions deployed from moongate.yaml: a restart redeploys the
	// config's function only when its entry changed, so console deploys survive restarts.
	ConfigHash string `json:"config_hash,omitempty"`
	// Fleet is set on versions deployed from the fleet (fleetAgent): the target of the
	// layer it came from ("group:lab") and that layer's revision. FleetHash is the fleet
	// function's own hash: a new revision that leaves a function as it was does not
	// deploy it again. A local deploy clears them (the next revision wins again).
	Fleet         string `json:"fleet,omitempty"`
	FleetRevision uint64 `json:"fleet_revision,omitempty"`
	FleetHash     string `json:"fleet_hash,omitempty"`
}

func (s *functionSpec) sha256() string {
	h := sha256.Sum256([]byte(s.Source))
	return hex.EncodeToString(h[:])
}

// version is one deployed version of a function: compiled, with its warm VM pool.
type version struct {
	name      string
	number    int
	spec      functionSpec
	fn        *luafn.Function
	triggers  []config.Trigger
	emit      string
	retries   int
	stats     *fnStats      // shared by every version of a function
	publishes *rate.Limiter // gateway.loops.publish_rate, shared likewise; nil: no limit
}

// fnStats counts invocations since start, for the API and the console cards, and holds
// the function's metric series, looked up once: a lookup by label values hashes them,
// which cost more than the counting on every event.
type fnStats struct {
	invocations, errors, durationUS atomic.Int64
	dropped                         atomic.Int64 // events dropped before they ran
	series                          invocationSeries
}

func (s *fnStats) observe(d time.Duration, err error) {
	s.invocations.Add(1)
	s.durationUS.Add(d.Microseconds())
	if err != nil {
		s.errors.Add(1)
	}
	s.series.observe(d, err)
}

// entry is a function name: its executor (ordering, queues) outlives versions.
type entry struct {
	exec      *executor
	publishes *rate.Limiter
	stats     fnStats
}

// fnTable is the current version of every function, never changed once published: a
// deploy, a delete, a config reload and a fleet revision each publish a new table in one
// pointer swap, so that an invocation resolves its version from one generation. No event
// can then see a revision half applied: once a function of the new one has run, every
// function resolves the new one.
type fnTable map[string]*version

// generation is what one swap publishes: the table and the routes its versions' triggers
// make. The router reads both from one generation, so a message is never routed by the
// triggers of one revision to the functions of another.
type generation struct {
	fns    fnTable
	routes *routes
}

// registry holds the deployed functions. Deploys swap the table: in-flight invocations
// finish on the version they started with, later events get the new one.
type registry struct {
	store *store.Store
	build func(functionSpec) (*version, error) // compiler.build
	exec  *executorEnv
	// series looks up a function's invocation series once (metrics.invocationSeries).
	series func(fn string) invocationSeries
	// changed is called after the current versions changed: the router brings the bus
	// subscriptions and the timers in line with the new routes.
	changed func()
	limits  *config.Gateway // ceilings, version_history, loops.publish_rate
	clock   Clock
	logger  *slog.Logger

	mu    sync.Mutex // serialises deploys and deletes
	m     sync.Map   // name -> *entry
	table atomic.Pointer[generation]
	// swapping serialises the table's writers: those under mu, and the start-up's activate.
	swapping sync.Mutex
	// retiring counts the replaced versions still closing (Close waits for their
	// in-flight invocations); stopAll waits for them.
	retiring sync.WaitGroup
}

func (r *registry) current(name string) *version {
	if g := r.table.Load(); g != nil {
		return g.fns[name]
	}
	return nil
}

// routes are the routes of the current generation.
func (r *registry) routes() *routes {
	if g := r.table.Load(); g != nil {
		return g.routes
	}
	return &routes{}
}

func (r *registry) entry(name string) *entry {
	e, ok := r.m.Load(name)
	if !ok {
		return nil
	}
	return e.(*entry)
}

// all returns the current versions sorted by name.
func (r *registry) all() []*version {
	var out []*version
	if g := r.table.Load(); g != nil {
		for _, v := range g.fns {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// deployRefused is a deploy refused for what it asks, answered 400: a source that does
// not compile (Err wraps a *luafn.CompileError, which has the line), or a setting that is
// invalid (Field). The old version keeps running.
type deployRefused struct {
	Field string // the setting at fault; "" for the source
	Err   error
}

func (e *deployRefused) Error() string { return e.Err.Error() }
func (e *deployRefused) Unwrap() error { return e.Err }

// deploy stores spec as the function's next version and makes it current. It returns the
// new version; on error the old version keeps running. verify, when set, runs once the
// version compiled and before anything is stored: its error refuses the deploy, and the
// spec it returns is the one stored. It runs under r.mu, so no other deploy of the same
// name can slip in between the tests and the install.
func (r *registry) deploy(spec functionSpec, verify func(functionSpec) (functionSpec, error)) (*version, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	latest, err := r.store.LatestVersion(spec.Name)
	if err != nil {
		return nil, err // guessing the next number could overwrite a stored version
	}
	spec.Version = latest + 1
	if spec.Created.IsZero() {
		spec.Created = r.clock.Now().UTC()
	}
	v, err := r.prepare(spec)
	if err != nil {
		return nil, err
	}
	if verify != nil {
		if v.spec, err = verify(v.spec); err != nil {
			v.fn.Close()
			return nil, err
		}
	}
	if err := r.install(v); err != nil {
		v.fn.Close()
		return nil, err
	}
	return v, nil
}

// prepare checks a deployed spec against the rules and ceilings of the config's
// functions: entries, which hold for every deploy (the API, the CLI, a rollback, the
// fleet), and builds it. Nothing is stored.
func (r *registry) prepare(spec functionSpec) (*version, error) {
	if errs := r.limits.Ceilings.CheckFunctionLimits(spec.Timeout, config.Size(spec.Memory), spec.Concurrency, spec.Retries); len(errs) > 0 {
		return nil, &deployRefused{Field: errs[0].Field, Err: errs[0]}
	}
	if err := config.CheckOverflow(spec.Overflow); err != nil {
		return nil, &deployRefused{Field: "overflow", Err: err}
	}
	if spec.Overflow == config.OverflowBlock {
		spec.Overflow = ""
	}
	return r.build(spec)
}

// install stores a built version as its function's newest and makes it current. The
// caller holds r.mu.
func (r *registry) install(v *version) error {
	return r.switchTo([]*version{v}, nil)
}

// switchTo stores installs as their functions' newest versions and deletes removes, then
// makes all of it current in one swap of the table (fnTable): events see the functions
// before or after, never some of each. The caller holds r.mu. An error of the store part
// way changes nothing that runs; the stored part is what the next start restores (the
// config and the fleet record what they applied only after, so they apply it again).
func (r *registry) switchTo(installs []*version, removes []string) error {
	for _, name := range removes {
		if err := r.store.DeleteFunction(name); err != nil {
			return fmt.Errorf("delete %s: %w", name, err)
		}
	}
	for _, v := range installs {
		blob, err := json.Marshal(v.spec)
		if err != nil {
			return fmt.Errorf("encode version: %w", err)
		}
		if err := r.store.PutVersion(v.name, v.number, blob); err != nil {
			return fmt.Errorf("store version %d of %s: %w", v.number, v.name, err)
		}
		if err := r.store.SetActive(v.name, v.number); err != nil {
			return fmt.Errorf("activate version %d of %s: %w", v.number, v.name, err)
		}
	}
	r.swap(installs, removes)
	for _, v := range installs {
		if _, err := r.store.PruneVersions(v.name, r.limits.VersionHistory); err != nil {
			// The history is only longer than it should be; the deploy stands.
			r.logger.Warn("prune version history", logkey.Function, v.name, logkey.Err, err)
		}
	}
	return nil
}

// activate makes v current without storing anything (start-up restores from the store).
func (r *registry) activate(v *version) {
	r.swap([]*version{v}, nil)
}

// swap publishes the next table: installs current, removes gone. Once it returns, nothing
// of a removed function runs (its running invocation is canceled, queued events are
// handed back); a replaced version closes in the background once its in-flight
// invocations are done.
func (r *registry) swap(installs []*version, removes []string) {
	r.swapping.Lock()
	next := fnTable{}
	if g := r.table.Load(); g != nil {
		maps.Copy(next, g.fns)
	}
	var replaced, removed []*version
	var aborted []*entry
	for _, v := range installs {
		e := r.entry(v.name)
		if e == nil {
			e = &entry{}
			name := v.name
			e.exec = newExecutor(r.exec, name, func() *version { return r.current(name) }, &e.stats)
			if pr := r.limits.Loops.PublishRate; pr > 0 {
				e.publishes = rate.NewLimiter(rate.Limit(pr), int(max(1, pr)))
			}
			e.stats.series = r.series(name)
			r.m.Store(name, e)
		}
		v.stats, v.publishes = &e.stats, e.publishes
		e.exec.shed.Store(v.spec.Overflow == config.OverflowDropOldest)
		if old := next[v.name]; old != nil {
			replaced = append(replaced, old)
		}
		next[v.name] = v
	}
	for _, name := range removes {
		if old := next[name]; old != nil {
			removed = append(removed, old)
		}
		delete(next, name)
		if e := r.entry(name); e != nil {
			r.m.Delete(name)
			aborted = append(aborted, e)
		}
	}
	r.table.Store(&generation{fns: next, routes: routesOf(next)})
	r.swapping.Unlock()
	r.changed()
	for _, e := range aborted {
		e.exec.abort()
	}
	for _, old := range removed {
		old.fn.Close()
	}
	for _, old := range replaced {
		r.retiring.Add(1)
		go func() {
			defer r.retiring.Done()
			old.fn.Close() // waits for its in-flight invocations
		}()
	}
}

// remove deletes a function; its KV stays unless purge, and its version history stays, so
// that a later deploy of the same name goes on numbering. Once remove returns, nothing of
// the function runs: the running invocation is canceled, queued events are handed back.
func (r *registry) remove(name string, purge bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removeLocked(name, purge)
}

// removeLocked is remove for a caller that holds r.mu.
func (r *registry) removeLocked(name string, purge bool) error {
	if r.entry(name) == nil {
		return errNotFound
	}
	if err := r.switchTo(nil, []string{name}); err != nil {
		return err
	}
	if purge { // after the abort: no commit of the function can land behind the purge
		if err := r.store.PurgeNamespace(name); err != nil {
			return fmt.Errorf("purge the KV of %s: %w", name, err)
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

var errNotFound = errors.New("not found")

// versions returns every stored version of a function, oldest first.
func (r *registry) versions(name string) ([]functionSpec, error) {
	blobs, err := r.store.Versions(name)
	if err != nil {
		return nil, err
	}
	return decodeVersions(name, blobs)
}

// versionPage reads up to limit versions of name older than before (0: the newest),
// newest first, and whether older ones remain.
func (r *registry) versionPage(name string, before, limit int) ([]functionSpec, bool, error) {
	blobs, more, err := r.store.VersionPage(name, before, limit)
	if err != nil {
		return nil, false, err
	}
	vs, err := decodeVersions(name, blobs)
	return vs, more, err
}

// storedVersion reads version n of a function from the store.
func (r *registry) storedVersion(name string, n int) (functionSpec, bool, error) {
	b, ok, err := r.store.Version(name, n)
	if err != nil || !ok {
		return functionSpec{}, false, err
	}
	vs, err := decodeVersions(name, [][]byte{b})
	if err != nil {
		return functionSpec{}, false, err
	}
	return vs[0], true, nil
}

func decodeVersions(name string, blobs [][]byte) ([]functionSpec, error) {
	out := make([]functionSpec, 0, len(blobs))
	for _, b := range blobs {
		var s functionSpec
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("decode stored version of %s: %w", name, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// specFromConfig turns a functions: entry into a spec.
func specFromConfig(f config.Function) functionSpec {
	s := functionSpec{
		Name: f.Name, Source: f.Code, Filename: f.Source, Triggers: f.Triggers,
		Timeout: f.Timeout, Memory: int64(f.Memory), Concurrency: f.Concurrency, Retries: *f.Retries,
		Env: f.Env, Emit: f.Emit, Overflow: f.Overflow,
	}
	if s.Overflow == config.OverflowBlock {
		s.Overflow = "" // the default: the same hash as before the key existed
	}
	h, _ := json.Marshal(s)
	sum := sha256.Sum256(h)
	s.ConfigHash = hex.EncodeToString(sum[:8])
	return s
}
