package gateway

import (
	"encoding/json"
	"fmt"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/logkey"
)

// restore brings back every function that was active before the stop, at the
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
func (r *registry) restore(cfg *config.Config) error {
	active, err := r.store.Active()
	if err != nil {
		return fmt.Errorf("read deployed functions: %w", err)
	}
	deploys, inConfig, err := r.planConfig(cfg, func(name string) bool { _, ok := active[name]; return ok })
	if err != nil {
		return err
	}
	redeployed := map[string]bool{}
	for _, v := range deploys {
		redeployed[v.name] = true
	}
	for name, n := range active {
		if redeployed[name] {
			continue
		}
		s, ok, err := r.storedVersion(name, n)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("restore %s: its active version %d is not stored", name, n)
		}
		if _, ok := inConfig[name]; !ok && s.ConfigHash != "" {
			if err := r.store.DeleteFunction(name); err != nil {
				return fmt.Errorf("delete %s, removed from the config: %w", name, err)
			}
			r.logger.Info("function deleted: it was removed from the config", logkey.Function, name, logkey.Version, n)
			continue
		}
		v, err := r.build(s)
		if err != nil {
			return fmt.Errorf("restore %s version %d: %w", name, n, err)
		}
		r.activate(v)
	}
	for _, v := range deploys {
		if err := r.install(v); err != nil {
			return err
		}
	}
	// Recorded last: a crash before this line deploys the changed entries again at the
	// next start (a spare version), never skips one.
	return r.recordAppliedConfig(inConfig)
}

// planConfig builds the next version of every functions: entry that is new or changed
// since it was last applied, all before anything is stored: one that does not compile
// refuses them all, with every error at once. It returns them and the config hash of
// every entry, by name. active says whether a function runs (or ran, at start).
func (r *registry) planConfig(cfg *config.Config, active func(name string) bool) (deploys []*version, inConfig map[string]string, err error) {
	applied, recorded, err := r.appliedConfig()
	if err != nil {
		return nil, nil, err
	}
	inConfig = map[string]string{}
	var errs config.ErrorList
	now := r.clock.Now().UTC()
	for i, f := range cfg.Functions {
		spec := specFromConfig(f)
		inConfig[f.Name] = spec.ConfigHash
		latest, err := r.store.LatestVersion(f.Name)
		if err != nil {
			return nil, nil, err
		}
		h := applied[f.Name]
		if !recorded { // a data dir from before the record: the newest config version tells
			vs, err := r.versions(f.Name)
			if err != nil {
				return nil, nil, err
			}
			if last := lastFromConfig(vs); last != nil {
				h = last.ConfigHash
			}
		}
		if h == spec.ConfigHash {
			if !active(f.Name) {
				r.logger.Info("function stays deleted: it was deleted through the API; edit its entry in the config to deploy it again",
					logkey.Function, f.Name)
			}
			continue
		}
		spec.Version, spec.Created = latest+1, now
		v, err := r.build(spec)
		if err != nil {
			errs = append(errs, cfg.Errorf(fmt.Sprintf("functions[%d]", i), "%v", err))
			continue
		}
		deploys = append(deploys, v)
	}
	if len(errs) > 0 {
		for _, v := range deploys {
			v.fn.Close()
		}
		return nil, nil, errs
	}
	return deploys, inConfig, nil
}

// reload applies cfg's functions: entries to the running functions by restore's rules: a
// new or changed entry is deployed as its function's next version (in-flight events
// finish on the version they started with); a function whose running version came from
// the config and whose entry is gone is deleted. All or nothing: a config whose functions
// do not all build changes nothing, and the functions switch in one step
// (registry.switchTo). It returns the names deployed and deleted.
func (r *registry) reload(cfg *config.Config) (deployed, deleted []string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	deploys, inConfig, err := r.planConfig(cfg, func(name string) bool { return r.current(name) != nil })
	if err != nil {
		return nil, nil, err
	}
	for _, v := range r.all() {
		if _, ok := inConfig[v.name]; !ok && v.spec.ConfigHash != "" {
			deleted = append(deleted, v.name)
		}
	}
	if err := r.switchTo(deploys, deleted); err != nil {
		for _, v := range deploys {
			v.fn.Close()
		}
		return nil, nil, err
	}
	for _, v := range deploys {
		deployed = append(deployed, v.name)
	}
	return deployed, deleted, r.recordAppliedConfig(inConfig)
}

// appliedConfigKey holds the config hash of every functions: entry at the last start, so
// that an entry removed and added again is deployed again, while an unchanged entry whose
// function was deleted through the API stays deleted.
const appliedConfigKey = "config/functions"

func (r *registry) appliedConfig() (applied map[string]string, recorded bool, err error) {
	blob, ok, err := r.store.GetMeta(appliedConfigKey)
	if err != nil || !ok {
		return nil, false, err
	}
	if err := json.Unmarshal(blob, &applied); err != nil {
		return nil, false, fmt.Errorf("decode the applied config: %w", err)
	}
	return applied, true, nil
}

func (r *registry) recordAppliedConfig(hashes map[string]string) error {
	blob, err := json.Marshal(hashes)
	if err != nil {
		return fmt.Errorf("encode the applied config: %w", err)
	}
	if err := r.store.PutMeta(appliedConfigKey, blob); err != nil {
		return fmt.Errorf("record the applied config: %w", err)
	}
	return nil
}

// lastFromConfig is the newest version deployed from the config, or nil.
func lastFromConfig(vs []functionSpec) *functionSpec {
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].ConfigHash != "" {
			return &vs[i]
		}
	}
	return nil
}
