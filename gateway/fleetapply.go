package gateway

import (
	"errors"
	"fmt"
	"net/http"
)

// applyFleet makes want the functions that run from the fleet, the way reload applies the
// config's functions: every changed function is built before anything is stored, and one
// that does not build changes nothing, with every error at once. A function whose running
// version came from the fleet and is not in want is deleted (its history and KV stay).
// The revision is switched to in one step (registry.switchTo): no event sees some of its
// functions and some of the revision before. It returns the names deployed and deleted.
func (r *registry) applyFleet(want []functionSpec) (deployed, deleted []string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var builds []*version
	closeBuilds := func() {
		for _, v := range builds {
			v.fn.Close()
		}
	}
	wanted := map[string]bool{}
	var errs []error
	now := r.clock.Now().UTC()
	for _, spec := range want {
		wanted[spec.Name] = true
		if cur := r.current(spec.Name); cur != nil && cur.spec.FleetHash == spec.FleetHash {
			continue // unchanged by this revision: it keeps its version and counters
		}
		latest, err := r.store.LatestVersion(spec.Name)
		if err != nil {
			closeBuilds()
			return nil, nil, err
		}
		spec.Version, spec.Created = latest+1, now
		v, err := r.prepare(spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("function %s: %w", spec.Name, err))
			continue
		}
		builds = append(builds, v)
	}
	if len(errs) > 0 {
		closeBuilds()
		return nil, nil, errors.Join(errs...)
	}
	for _, v := range r.all() {
		if v.spec.Fleet != "" && !wanted[v.name] {
			deleted = append(deleted, v.name)
		}
	}
	if err := r.switchTo(builds, deleted); err != nil {
		closeBuilds()
		return nil, nil, err
	}
	for _, v := range builds {
		deployed = append(deployed, v.name)
	}
	return deployed, deleted, nil
}

// managedByFleet is the API's managed_by of a function deployed from the fleet.
const managedByFleet = "fleet"

// fleetManaged refuses a local change of a function the fleet deployed (409): the
// operator forces it (?force=1), and the fleet's next revision wins again.
type fleetManaged struct {
	name, target string
	revision     uint64
}

func (e *fleetManaged) Error() string {
	return fmt.Sprintf("%s is managed by the fleet (%s revision %d): force it (?force=1, --force) to change it here until the fleet's next revision",
		e.name, e.target, e.revision)
}

// checkFleetManaged refuses a request that changes v unless it says force=1.
func checkFleetManaged(v *version, r *http.Request) error {
	if v == nil || v.spec.Fleet == "" || r.URL.Query().Get("force") == "1" {
		return nil
	}
	return &fleetManaged{name: v.name, target: v.spec.Fleet, revision: v.spec.FleetRevision}
}

// unlessFleetManaged wraps a deploy's verify with checkFleetManaged, which then runs
// under the registry's lock: no fleet revision slips in between the check and the deploy.
func (a *api) unlessFleetManaged(r *http.Request, verify func(functionSpec) (functionSpec, error)) func(functionSpec) (functionSpec, error) {
	return func(s functionSpec) (functionSpec, error) {
		if err := checkFleetManaged(a.registry.current(s.Name), r); err != nil {
			return s, err
		}
		if verify == nil {
			return s, nil
		}
		return verify(s)
	}
}
