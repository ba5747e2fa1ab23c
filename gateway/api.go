package gateway

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sort"
	"strconv"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/gateway/console"
	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sensors"
	"github.com/moongate/moongate/sync/sink"
	"github.com/moongate/moongate/sync/store"
)

// maxBody bounds API request bodies: a function's source and settings, or a test event.
const maxBody = 1 << 20

// api serves the HTTP API, the metrics and the console's pages over the running parts.
type api struct {
	cfg        *config.Config
	version    string     // Options.Version
	tests      TestRunner // Options.Tests
	clock      Clock
	started    time.Time
	store      *store.Store
	bus        mqtt.Bus
	sensors    *sensors.Manager
	sensorCfgs map[string]sensors.Config // the decoded sensors: entries, for the pins' details
	sinks      []*sink.Sink
	registry   *registry
	proc       *processor
	live       *live
	hub        *console.Hub
	auth       *tokenAuth
	guard      *guard
	metrics    *metrics
	firmware   *fwService  // nil: firmware is off
	fleet      *fleetAgent // nil: no fleet broker
	selfUpdate *selfUpdater
	logger     *slog.Logger
}

func (a *api) handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, a.auth.require(h)) }
	route("GET /api/v1/status", a.getStatus)
	route("GET /api/v1/functions", a.listFunctions)
	route("GET /api/v1/functions/{name}", a.getFunction)
	route("PUT /api/v1/functions/{name}", a.putFunction)
	route("DELETE /api/v1/functions/{name}", a.deleteFunction)
	route("POST /api/v1/functions/{name}/invoke", a.invokeFunction)
	route("POST /api/v1/functions/{name}/test", a.testFunction)
	route("POST /api/v1/functions/{name}/rollback", a.rollbackFunction)
	route("GET /api/v1/functions/{name}/kv", a.getKV)
	route("GET /api/v1/sync", a.getSync)
	route("POST /api/v1/gpio/{pin}", a.simulateEdge)
	route("GET /api/v1/history", a.serveHistory)
	route("GET /api/v1/devices", a.listDevices)
	route("POST /api/v1/devices/{id}/disconnect", a.disconnectDevice)
	route("GET /api/v1/fleet", a.getFleet)
	route("GET /api/v1/firmware", a.listFirmware)
	route("POST /api/v1/firmware", a.postFirmware)
	route("GET /api/v1/firmware/rollouts", a.listRollouts)
	route("POST /api/v1/firmware/rollouts", a.createRollout)
	route("GET /api/v1/firmware/rollouts/{id}", a.getRollout)
	route("POST /api/v1/firmware/rollouts/{id}/{action}", a.changeRollout)
	route("GET /api/v1/self-update", a.getSelfUpdate)
	route("POST /api/v1/self-update", a.postSelfUpdate)
	route("GET /metrics", a.metrics.handler().ServeHTTP)
	// The hub checks the token itself: browsers cannot set headers on a websocket, so it
	// also takes a subprotocol or ?token=, which no other endpoint accepts.
	mux.Handle("GET /api/v1/live", a.hub)
	mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	}))
	mux.Handle("/", console.Handler())
	if a.cfg.Gateway.Debug.Pprof {
		mux.Handle("GET /debug/pprof/", a.auth.require(http.HandlerFunc(pprof.Index)))
		mux.Handle("GET /debug/pprof/cmdline", a.auth.require(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("GET /debug/pprof/profile", a.auth.require(http.HandlerFunc(pprof.Profile)))
		mux.Handle("GET /debug/pprof/symbol", a.auth.require(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("GET /debug/pprof/trace", a.auth.require(http.HandlerFunc(pprof.Trace)))
	}
	return a.guard.wrap(mux)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decodeBody reads a size-limited JSON body; an empty body leaves v as it is.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	err := json.NewDecoder(r.Body).Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case err == nil || errors.Is(err, io.EOF): // an empty body keeps the defaults
		return true
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxBody))
	default:
		writeError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
	}
	return false
}

// kvUsageDoc is what a function's KV holds, against gateway.kv_quota.
type kvUsageDoc struct {
	Keys       int64 `json:"keys"`
	Bytes      int64 `json:"bytes"`
	QuotaKeys  int64 `json:"quota_keys"`
	QuotaBytes int64 `json:"quota_bytes"`
}

type countersDoc struct {
	Invocations   int64 `json:"invocations"`
	Errors        int64 `json:"errors"`
	DurationUSSum int64 `json:"duration_us_sum"`
	Dropped       int64 `json:"dropped"` // events dropped before they ran, every reason (metrics: moongate_events_dropped_total)
}

type versionDoc struct {
	Version    int       `json:"version"`
	Created    time.Time `json:"created"`
	Size       int       `json:"size"`
	SHA256     string    `json:"sha256"`
	RollbackOf int       `json:"rollback_of,omitempty"`
}

type functionDoc struct {
	Name        string            `json:"name"`
	Version     int               `json:"version"`
	Viewing     int               `json:"viewing,omitempty"`
	Source      string            `json:"source,omitempty"`
	Triggers    []string          `json:"triggers"`
	Timeout     string            `json:"timeout"`
	Memory      string            `json:"memory"`
	Concurrency int               `json:"concurrency"`
	Env         map[string]string `json:"env,omitempty"`
	Emit        string            `json:"emit"`
	Overflow    string            `json:"overflow"`
	KV          kvUsageDoc        `json:"kv"`
	// ManagedBy is "fleet" for a version deployed from the fleet, with the target and
	// revision of its layer; a local deploy over it needs force.
	ManagedBy     string    `json:"managed_by,omitempty"`
	FleetTarget   string    `json:"fleet_target,omitempty"`
	FleetRevision uint64    `json:"revision,omitempty"`
	Created       time.Time `json:"created"`
	// Tested says the version went live through a deploy with tests attached, all of
	// which passed (TestsPassed cases); false for a deploy without tests.
	Tested      bool         `json:"tested"`
	TestsPassed int          `json:"tests_passed,omitempty"`
	Counters    countersDoc  `json:"counters"`
	Versions    []versionDoc `json:"versions,omitempty"`
	// VersionsMore says that older versions than the listed ones are stored
	// (?history_before=OLDEST lists them).
	VersionsMore bool `json:"versions_more,omitempty"`
}

func (a *api) functionDoc(v *version, spec functionSpec, full bool) functionDoc {
	d := functionDoc{
		Name: v.name, Version: v.number, Triggers: spec.Triggers, Timeout: spec.Timeout.String(),
		Memory: config.Size(spec.Memory).String(), Concurrency: spec.Concurrency, Emit: spec.Emit,
		Overflow: cmp.Or(spec.Overflow, config.OverflowBlock), Created: spec.Created,
		Tested: spec.TestsPassed > 0, TestsPassed: spec.TestsPassed, KV: a.kvUsage(v.name),
		Counters: countersDoc{Invocations: v.stats.invocations.Load(), Errors: v.stats.errors.Load(),
			DurationUSSum: v.stats.durationUS.Load(), Dropped: v.stats.dropped.Load()},
	}
	if d.Triggers == nil {
		d.Triggers = []string{}
	}
	if spec.Fleet != "" {
		d.ManagedBy, d.FleetTarget, d.FleetRevision = managedByFleet, spec.Fleet, spec.FleetRevision
	}
	if full {
		d.Source, d.Env = spec.Source, spec.Env
	}
	return d
}

func (a *api) kvUsage(name string) kvUsageDoc {
	u, q := a.store.KVUsage(name), a.cfg.Gateway.KVQuota
	return kvUsageDoc{Keys: u.Keys, Bytes: u.Bytes, QuotaKeys: q.Keys, QuotaBytes: int64(q.Bytes)}
}

func (a *api) listFunctions(w http.ResponseWriter, r *http.Request) {
	docs := []functionDoc{}
	for _, v := range a.registry.all() {
		docs = append(docs, a.functionDoc(v, v.spec, false))
	}
	writeJSON(w, http.StatusOK, map[string]any{"functions": docs})
}

// A function document lists its version history a page at a time, newest first.
const (
	defaultHistoryPage = 20
	maxHistoryPage     = 100
)

// fullDoc is v's document showing version viewing (0: v itself), with the page of its
// history older than before (0: from the newest).
func (a *api) fullDoc(v *version, viewing, before, limit int) (functionDoc, error) {
	spec := v.spec
	if viewing != 0 {
		s, ok, err := a.registry.storedVersion(v.name, viewing)
		if err != nil {
			return functionDoc{}, err
		}
		if !ok {
			return functionDoc{}, errNotFound
		}
		spec = s
	}
	vs, more, err := a.registry.versionPage(v.name, before, limit)
	if err != nil {
		return functionDoc{}, err
	}
	d := a.functionDoc(v, spec, true)
	d.Viewing, d.VersionsMore = viewing, more
	for _, s := range vs {
		d.Versions = append(d.Versions, versionDoc{Version: s.Version, Created: s.Created, Size: len(s.Source),
			SHA256: s.sha256(), RollbackOf: s.RollbackOf})
	}
	return d, nil
}

func (a *api) getFunction(w http.ResponseWriter, r *http.Request) {
	v := a.registry.current(r.PathValue("name"))
	if v == nil {
		writeError(w, http.StatusNotFound, "no function "+strconv.Quote(r.PathValue("name")))
		return
	}
	number := func(key string, def, lo, hi int) (int, bool) {
		q := r.URL.Query().Get(key)
		if q == "" {
			return def, true
		}
		n, err := strconv.Atoi(q)
		if err != nil || n < lo || n > hi {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s must be a number from %d to %d", key, lo, hi))
			return 0, false
		}
		return n, true
	}
	viewing, ok := number("version", 0, 1, 1<<31-1)
	if !ok {
		return
	}
	before, ok := number("history_before", 0, 1, 1<<31-1)
	if !ok {
		return
	}
	limit, ok := number("history_limit", defaultHistoryPage, 1, maxHistoryPage)
	if !ok {
		return
	}
	d, err := a.fullDoc(v, viewing, before, limit)
	switch {
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("version %d of %s is not stored", viewing, v.name))
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		writeJSON(w, http.StatusOK, d)
	}
}

// deployRequest is the PUT body; absent fields keep the current version's value.
type deployRequest struct {
	Source      *string           `json:"source"`
	Triggers    []string          `json:"triggers"`
	Timeout     *string           `json:"timeout"`
	Memory      *string           `json:"memory"`
	Concurrency *int              `json:"concurrency"`
	Retries     *int              `json:"retries"`
	Env         map[string]string `json:"env"`
	Emit        *string           `json:"emit"`
	Overflow    *string           `json:"overflow"`
	// Tests, when given, run against the new version before it goes live: any failing
	// case refuses the deploy. Nil (absent) deploys untested, and the function's document
	// says so (tested: false).
	Tests []TestFile `json:"tests"`
}

func (a *api) putFunction(w http.ResponseWriter, r *http.Request) {
	spec, req, created, ok := a.specFromRequest(w, r)
	if !ok {
		return
	}
	var verify func(functionSpec) (functionSpec, error)
	if req.Tests != nil { // attached tests always run: no field or setting skips them
		verify = func(s functionSpec) (functionSpec, error) {
			report, err := a.runTests(s, req.Tests)
			if err == nil && report.Failed > 0 {
				err = &testsFailed{report: report}
			}
			s.TestsPassed = report.Passed
			return s, err
		}
	}
	a.deployAndRespond(w, spec, created, a.unlessFleetManaged(r, verify))
}

// specFromRequest reads a deploy's body into the spec it would deploy: the current
// version's, with the fields given. It answers the request itself when it returns false.
func (a *api) specFromRequest(w http.ResponseWriter, r *http.Request) (spec functionSpec, req deployRequest, created, ok bool) {
	name := r.PathValue("name")
	if err := config.CheckFunctionName(name); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error(), "field": "name"})
		return
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Source == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "source is required", "field": "source"})
		return
	}
	spec = functionSpec{Name: name, Timeout: config.DefaultFunctionTimeout, Memory: int64(config.DefaultFunctionMemory),
		Concurrency: config.DefaultFunctionConcurrency, Retries: config.DefaultFunctionRetries}
	cur := a.registry.current(name)
	if cur != nil {
		spec = cur.spec
		spec.ConfigHash, spec.RollbackOf, spec.Created, spec.TestsPassed = "", 0, time.Time{}, 0
		spec.Fleet, spec.FleetRevision, spec.FleetHash = "", 0, ""
	}
	spec.Source = *req.Source
	if req.Triggers != nil {
		spec.Triggers = req.Triggers
	}
	if req.Env != nil {
		spec.Env = req.Env
	}
	if req.Emit != nil {
		spec.Emit = *req.Emit
	}
	if req.Overflow != nil {
		spec.Overflow = *req.Overflow
	}
	if req.Concurrency != nil {
		spec.Concurrency = *req.Concurrency
	}
	if req.Retries != nil {
		spec.Retries = *req.Retries
	}
	if req.Timeout != nil {
		d, err := time.ParseDuration(*req.Timeout)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad timeout " + strconv.Quote(*req.Timeout), "field": "timeout"})
			return spec, req, false, false
		}
		spec.Timeout = d
	}
	if req.Memory != nil {
		n, err := humanize.ParseBytes(*req.Memory)
		if err != nil || n > 1<<62 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad memory " + strconv.Quote(*req.Memory), "field": "memory"})
			return spec, req, false, false
		}
		spec.Memory = int64(n)
	}

	if len(spec.Triggers) == 0 {
		spec.Triggers = []string{}
	}
	return spec, req, cur == nil, true
}

// deployAndRespond deploys spec (verify, when set, runs on the compiled version before it
// goes live; see registry.deploy) and answers with the new version's document.
func (a *api) deployAndRespond(w http.ResponseWriter, spec functionSpec, created bool, verify func(functionSpec) (functionSpec, error)) {
	v, err := a.registry.deploy(spec, verify)
	if err != nil {
		writeDeployError(w, err)
		return
	}
	a.logger.Info("function deployed", logkey.Function, v.name, logkey.Version, v.number, "triggers", v.spec.Triggers,
		"tests_passed", v.spec.TestsPassed)
	d, err := a.fullDoc(v, 0, 0, defaultHistoryPage)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, d)
}

// writeDeployError answers a refused deploy: 400 with the place of a compile error or
// the failing test cases; the old version keeps running.
func writeDeployError(w http.ResponseWriter, err error) {
	var ce *deployRefused
	var tf *testsFailed
	var fm *fleetManaged
	switch {
	case errors.As(err, &fm):
		writeJSON(w, http.StatusConflict, map[string]string{"error": fm.Error()})
	case errors.As(err, &tf):
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error": tf.Error() + ": not deployed, the running version is unchanged", "field": "tests", "tests": tf.report})
	case errors.Is(err, errNoTestRunner):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error(), "field": "tests"})
	case errors.As(err, &ce):
		body := map[string]any{"error": ce.Error()}
		// An error in the source gives its place once, in line, so the console ("Line 3:
		// ...") and the CLI ("temp_alert.lua:3: ...") can say where without repeating it.
		if le := (*luafn.CompileError)(nil); errors.As(err, &le) && le.Line > 0 {
			body["error"], body["line"] = le.Message, le.Line
		}
		if ce.Field != "" {
			body["field"] = ce.Field
		}
		writeJSON(w, http.StatusBadRequest, body)
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func (a *api) deleteFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkFleetManaged(a.registry.current(name), r); err != nil {
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		return
	}
	err := a.registry.remove(name, r.URL.Query().Get("purge") == "1")
	switch {
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, "no function "+strconv.Quote(name))
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		a.logger.Info("function deleted", logkey.Function, name)
		w.WriteHeader(http.StatusNoContent)
	}
}

func (a *api) rollbackFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	cur := a.registry.current(name)
	if cur == nil {
		writeError(w, http.StatusNotFound, "no function "+strconv.Quote(name))
		return
	}
	var req struct {
		Version int `json:"version"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	target := req.Version
	if target == 0 { // the newest stored before the current one
		prev, _, err := a.registry.versionPage(name, cur.number, 1)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		if len(prev) == 0 {
			writeError(w, http.StatusConflict, name+" has no previous version")
			return
		}
		target = prev[0].Version
	}
	s, ok, err := a.registry.storedVersion(name, target)
	switch {
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	case !ok:
		writeError(w, http.StatusNotFound, fmt.Sprintf("version %d of %s is not stored (gateway.version_history keeps the newest %d)",
			target, name, a.cfg.Gateway.VersionHistory))
	default:
		s.RollbackOf, s.Created, s.ConfigHash = target, time.Time{}, ""
		s.Fleet, s.FleetRevision, s.FleetHash = "", 0, ""
		a.deployAndRespond(w, s, false, a.unlessFleetManaged(r, nil))
	}
}

type kvItem struct {
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value,omitempty"`
	Size    int             `json:"size"`
	Omitted bool            `json:"omitted,omitempty"` // the value is not in this listing: over its byte budget
	Expires *time.Time      `json:"expires,omitempty"`
}

// A KV listing's byte budget: values over 64 KiB, and values past 1 MiB in all, are left
// out (omitted, with their size), so a console that opens a function's KV costs neither
// the gateway's memory nor the browser's what the values weigh.
const (
	kvListValueBytes = 64 << 10
	kvListTotalBytes = 1 << 20
)

func (a *api) getKV(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if a.registry.current(name) == nil {
		writeError(w, http.StatusNotFound, "no function "+strconv.Quote(name))
		return
	}
	limit := 1000
	if q := r.URL.Query().Get("limit"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "limit must be between 1 and 10000")
			return
		}
		limit = n
	}
	kvs, err := a.store.KVList(name, r.URL.Query().Get("prefix"), limit+1, kvListValueBytes, kvListTotalBytes)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	items := []kvItem{}
	for i, kv := range kvs {
		if i == limit {
			break
		}
		it := kvItem{Key: kv.Key, Value: kv.Value, Size: kv.Size}
		if kv.Value == nil {
			it.Omitted = true // too large for a listing: read it alone with the value's key
		}
		if !kv.ExpiresAt.IsZero() {
			t := kv.ExpiresAt.UTC()
			it.Expires = &t
		}
		items = append(items, it)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Key < items[j].Key })
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "truncated": len(kvs) > limit})
}

// simulateEdge drives a simulated GPIO input (driver: gpio, sim: true): the console's
// button, for testing button logic without hardware.
func (a *api) simulateEdge(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Level *int `json:"level"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Level == nil || (*req.Level != 0 && *req.Level != 1) {
		writeError(w, http.StatusBadRequest, `want {"level": 0} or {"level": 1}`)
		return
	}
	if err := a.sensors.SimulateEdge(r.PathValue("pin"), *req.Level); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, sensors.ErrNotDeclared) {
			status = http.StatusNotFound
		}
		writeError(w, status, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
