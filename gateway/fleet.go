package gateway

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/moongate/moongate/fleet"
	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/mqtt"
	"github.com/moongate/moongate/sync/store"
)

// fleetAgent takes the fleet's desired state from the cloud broker (package fleet): it
// subscribes to the retained documents of the gateway's groups and of the gateway itself,
// verifies each, layers them (fleet.Merge) and applies the result through the registry,
// all functions or none; and it retains a report of what runs and what was refused. Its
// connection is a second MQTT client, apart from the gateway's bus.
type fleetAgent struct {
	id     string
	groups []string
	keys   []fleet.PublicKey
	topics map[string]string // desired topic -> the target its documents must name
	reg    *registry
	store  *store.Store
	client *mqtt.Client
	clock  Clock
	logger *slog.Logger
	kick   chan struct{} // a report is due
	done   chan struct{} // closed when run has returned

	// handling is held while a document is taken: run waits for it after closing the
	// client, so nothing is applied once the registry stops.
	handling sync.Mutex
	mu       sync.Mutex // guards layers and lastErr; documents are taken one at a time
	layers   map[string]appliedLayer
	lastErr  string
	// refused is the last payload refused per target: delivered again (each resync, each
	// reconnection while it stays retained) it is not built, logged or reported again.
	// Only handle, one document at a time, uses it.
	refused map[string][sha256.Size]byte
}

// appliedLayer is a document the gateway applied, with the payload it came in.
type appliedLayer struct {
	payload []byte
	doc     *fleet.Document
}

// fleetLayersKey holds the applied documents' payloads by target, so that a restart
// layers a document that arrives over the ones applied before, and refuses a replay of
// an older revision.
const fleetLayersKey = "fleet/layers"

// openFleet prepares the agent of cfg's fleet: section; nil without a fleet broker.
func openFleet(cfg *config.Config, reg *registry, st *store.Store, clock Clock, logger *slog.Logger) (*fleetAgent, error) {
	f := cfg.Fleet
	if f.Broker == "" {
		return nil, nil
	}
	id := cfg.Gateway.ID
	logger = logger.With(logkey.Component, "fleet")
	opts := fleetClientOptions(cfg)
	opts.Logger = logger
	client, err := mqtt.NewClient(opts)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	a := &fleetAgent{id: id, groups: f.Groups, keys: f.PublicKeys, topics: map[string]string{}, reg: reg, store: st,
		client: client, clock: clock, logger: logger, kick: make(chan struct{}, 1), done: make(chan struct{}),
		layers: map[string]appliedLayer{}, refused: map[string][sha256.Size]byte{}}
	for _, g := range f.Groups {
		a.addTarget(fleet.GroupPrefix + g)
	}
	a.addTarget(fleet.GatewayPrefix + id)
	if err := a.loadLayers(); err != nil {
		return nil, err
	}
	// Before the gateway is ready: a gateway that left a group does not run the group's
	// functions for a moment after its start.
	if err := a.dropLeftLayers(); err != nil {
		err = fmt.Errorf("the functions of the groups left are still applied: %w", err)
		a.lastErr = err.Error()
		a.logger.Warn("fleet: leave groups", logkey.Err, err)
	}
	return a, nil
}

// fleetClientOptions are the fleet connection's settings; Check builds the client from
// them too, so that a TLS file run would refuse is refused by check.
func fleetClientOptions(cfg *config.Config) mqtt.ClientOptions {
	f, id := cfg.Fleet, cfg.Gateway.ID
	return mqtt.ClientOptions{
		Broker: f.Broker, Failover: f.FailoverBrokers, ClientID: cmp.Or(f.ClientID, "moongate-fleet-"+id), Username: f.Username, Password: f.Password,
		TLS:      mqtt.TLSFiles{CA: cfg.Resolve(f.TLS.CA), Cert: cfg.Resolve(f.TLS.Cert), Key: cfg.Resolve(f.TLS.Key)},
		Presence: &mqtt.Presence{Topic: fleet.OnlineTopic(id), Online: fleet.Online, Offline: fleet.Offline},
	}
}

func (a *fleetAgent) addTarget(target string) {
	topic, _ := fleet.DesiredTopic(target) // the names were checked with the config
	a.topics[topic] = target
}

func (a *fleetAgent) loadLayers() error {
	blob, ok, err := a.store.GetMeta(fleetLayersKey)
	if err != nil || !ok {
		return err
	}
	var stored map[string][]byte
	if err := json.Unmarshal(blob, &stored); err != nil {
		return fmt.Errorf("fleet: decode the applied documents: %w", err)
	}
	for target, payload := range stored {
		doc, err := fleet.Verify(payload, a.keys)
		if err != nil { // a key removed from fleet.keys since: its documents are taken no more
			a.logger.Warn("an applied document no longer verifies: it is left out of the next revision", "target", target, logkey.Err, err)
			continue
		}
		a.layers[target] = appliedLayer{payload: payload, doc: doc}
	}
	return nil
}

// run connects, takes documents and reports until ctx ends, then says offline and closes.
func (a *fleetAgent) run(ctx context.Context) {
	defer close(a.done)
	defer func() {
		a.client.Close()
		a.handling.Lock() // a document taken as the client closed
		a.handling.Unlock()
	}()
	var subs []mqtt.Subscription
	for topic := range a.topics {
		subs = append(subs, mqtt.Subscription{Filter: topic, QoS: 1})
	}
	if err := a.client.Start(ctx, subs, mqtt.HandlerFunc(a.handle)); err != nil {
		a.logger.Error("fleet: the cloud broker refused the gateway; no document is taken until a restart", logkey.Err, err)
		return
	}
	tick := time.NewTicker(fleet.ReportInterval)
	defer tick.Stop()
	resync := time.NewTicker(fleet.ResyncInterval)
	defer resync.Stop()
	a.report(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-tick.C:
		case <-resync.C:
			// Subscribing again makes the broker send the retained documents again: on a
			// cluster whose nodes learn a retained message late (NATS), a subscription
			// made in between missed it. The document applied already is skipped.
			for _, sub := range subs {
				if err := a.client.Subscribe(sub); err != nil {
					a.logger.Warn("fleet: subscribe again", logkey.Topic, sub.Filter, logkey.Err, err)
				}
			}
			continue
		}
		a.report(ctx)
	}
}

// wait returns once run has returned.
func (a *fleetAgent) wait() { <-a.done }

// handle takes one desired document. The client hands them one at a time, in order.
func (a *fleetAgent) handle(m *mqtt.Message) {
	defer m.Ack()
	a.handling.Lock()
	defer a.handling.Unlock()
	target, ok := a.topics[m.Topic]
	if !ok {
		return
	}
	if len(m.Payload) == 0 { // a cleared retained message is unsigned: it removes nothing
		a.logger.Info("fleet: the desired document was cleared on the broker; the applied one stays", "target", target)
		return
	}
	sum := sha256.Sum256(m.Payload)
	if last, ok := a.refused[target]; ok && last == sum {
		return // refused already; its error is still the one reported
	}
	changed, err := a.take(target, m.Payload)
	if !changed && err == nil {
		return // the document applied already, delivered again on reconnection
	}
	if err != nil {
		a.refused[target] = sum
		a.logger.Warn("fleet: document refused", "target", target, logkey.Err, err)
	} else {
		delete(a.refused, target)
	}
	a.mu.Lock()
	a.lastErr = ""
	if err != nil {
		a.lastErr = err.Error()
	}
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// take verifies a document and applies the layers it makes; changed is false for the
// document applied already.
func (a *fleetAgent) take(target string, payload []byte) (changed bool, err error) {
	doc, err := fleet.Verify(payload, a.keys)
	if err != nil {
		return true, fmt.Errorf("%s: %w", target, err)
	}
	if doc.Target != target {
		return true, fmt.Errorf("%s: the document names target %s: refused", target, doc.Target)
	}
	a.mu.Lock()
	prev, had := a.layers[target]
	next := maps.Clone(a.layers)
	a.mu.Unlock()
	if had {
		if bytes.Equal(prev.payload, payload) {
			return false, nil
		}
		if doc.Revision <= prev.doc.Revision {
			return true, fmt.Errorf("%s revision %d ignored: not newer than the applied revision %d", target, doc.Revision, prev.doc.Revision)
		}
	}
	next[target] = appliedLayer{payload: payload, doc: doc}
	if err := a.apply(next); err != nil {
		return true, fmt.Errorf("%s revision %d not applied, the gateway stays on its previous state: %w", target, doc.Revision, err)
	}
	a.logger.Info("fleet revision applied", "target", target, "revision", doc.Revision)
	return true, nil
}

// apply runs the functions that layers merge to, all or none, and records the layers.
func (a *fleetAgent) apply(layers map[string]appliedLayer) error {
	docs := map[string]*fleet.Document{}
	for t, l := range layers {
		docs[t] = l.doc
	}
	var specs []functionSpec
	var errs []error
	for _, f := range fleet.Merge(a.id, a.groups, docs) {
		s, err := specFromFleet(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		specs = append(specs, s)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	deployed, deleted, err := a.reg.applyFleet(specs)
	for _, name := range deployed {
		v := a.reg.current(name)
		a.logger.Info("function deployed from the fleet", logkey.Function, name, logkey.Version, v.number,
			"target", v.spec.Fleet, "revision", v.spec.FleetRevision)
	}
	for _, name := range deleted {
		a.logger.Info("function deleted: no fleet layer has it any more", logkey.Function, name)
	}
	if err != nil {
		return err
	}
	// Recorded last: a crash before this line applies the document again at the next
	// start (the functions it deployed are unchanged then, and stay as they are).
	if err := a.storeLayers(layers); err != nil {
		return err
	}
	a.mu.Lock()
	a.layers = layers
	a.mu.Unlock()
	return nil
}

// dropLeftLayers applies the stored layers without those of groups the gateway left
// (fleet.groups changed since): their functions go at once, not with the next document.
func (a *fleetAgent) dropLeftLayers() error {
	kept := map[string]appliedLayer{}
	for t, l := range a.layers {
		topic, _ := fleet.DesiredTopic(t)
		if _, ok := a.topics[topic]; ok {
			kept[t] = l
		}
	}
	if len(kept) == len(a.layers) {
		return nil
	}
	a.logger.Info("fleet: the gateway left groups since the last start; their functions are deleted")
	return a.apply(kept)
}

func (a *fleetAgent) storeLayers(layers map[string]appliedLayer) error {
	stored := map[string][]byte{}
	for t, l := range layers {
		stored[t] = l.payload
	}
	blob, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("fleet: encode the applied documents: %w", err)
	}
	if err := a.store.PutMeta(fleetLayersKey, blob); err != nil {
		return fmt.Errorf("fleet: record the applied documents: %w", err)
	}
	return nil
}

// specFromFleet is the spec a fleet function deploys, with the defaults of a functions:
// entry for what it leaves out.
func specFromFleet(f fleet.Layered) (functionSpec, error) {
	s := functionSpec{Name: f.Name, Source: f.Source, Filename: f.Name + ".lua", Triggers: f.Triggers,
		Timeout: config.DefaultFunctionTimeout, Memory: int64(config.DefaultFunctionMemory),
		Concurrency: cmp.Or(f.Concurrency, config.DefaultFunctionConcurrency), Retries: config.DefaultFunctionRetries,
		Env: f.Env, Emit: f.Emit, Overflow: f.Overflow, Fleet: f.Target, FleetRevision: f.Revision}
	if err := config.CheckFunctionName(f.Name); err != nil {
		return s, fmt.Errorf("function %q: %w", f.Name, err)
	}
	if f.Timeout != "" {
		d, err := time.ParseDuration(f.Timeout)
		if err != nil {
			return s, fmt.Errorf("function %s: timeout: %w", f.Name, err)
		}
		s.Timeout = d
	}
	if f.Memory != "" {
		n, err := humanize.ParseBytes(f.Memory)
		if err != nil || n > 1<<62 {
			return s, fmt.Errorf("function %s: bad memory %q", f.Name, f.Memory)
		}
		s.Memory = int64(n)
	}
	if f.Retries != nil {
		s.Retries = *f.Retries
	}
	if s.Triggers == nil {
		s.Triggers = []string{}
	}
	h, _ := json.Marshal(f.Function)
	sum := sha256.Sum256(h)
	s.FleetHash = hex.EncodeToString(sum[:8])
	return s, nil
}

// report publishes the gateway's report, retained. A broker that is away holds it back
// until ctx ends; the next report replaces it.
func (a *fleetAgent) report(ctx context.Context) {
	r := fleet.Report{Gateway: a.id, Groups: a.groups, Layers: []fleet.LayerReport{}, Functions: []fleet.FunctionReport{},
		Health: "ok", OutboxDepth: a.store.Stats().PendingRecords, Updated: a.clock.Now().UTC()}
	a.mu.Lock()
	for t, l := range a.layers {
		r.Layers = append(r.Layers, fleet.LayerReport{Target: t, Revision: l.doc.Revision})
	}
	r.LastError = a.lastErr
	a.mu.Unlock()
	slices.SortFunc(r.Layers, func(x, y fleet.LayerReport) int { return cmp.Compare(x.Target, y.Target) })
	for _, v := range a.reg.all() {
		fr := fleet.FunctionReport{Name: v.name, Version: v.number, SHA256: v.spec.sha256()}
		if v.spec.Fleet != "" {
			fr.ManagedBy, fr.Target, fr.Revision = managedByFleet, v.spec.Fleet, v.spec.FleetRevision
		}
		r.Functions = append(r.Functions, fr)
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if err := a.store.Ping(pctx); err != nil {
		r.Health = "store: " + err.Error()
	}
	cancel()
	b, err := json.Marshal(r)
	if err != nil {
		a.logger.Error("fleet: encode the report", logkey.Err, err)
		return
	}
	if err := a.client.Publish(ctx, fleet.ReportedTopic(a.id), b, 1, true); err != nil && ctx.Err() == nil {
		a.logger.Warn("fleet: publish the report", logkey.Err, err)
	}
}
