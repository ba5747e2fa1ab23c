package firmware

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moongate/moongate/internal/atomicfile"
)

// Rollouts (PROTOCOL.md, Rollouts): an image offered to the devices of a type in waves,
// a canary first, each wave opening only once the one before is all healthy or failed,
// and the whole halting itself when failures pass a threshold.

// The states of a rollout.
const (
	RolloutRunning = "running"
	RolloutPaused  = "paused"  // no new offers until resumed
	RolloutHalted  = "halted"  // by itself: the canary failed, or failures passed the threshold
	RolloutAborted = "aborted" // by its operator
	RolloutDone    = "done"    // every device it took in is healthy or failed
)

// DeviceWaiting is the status, in a rollout, of a device whose wave is not open yet.
const DeviceWaiting = "waiting"

// ErrRollout wraps every refusal of a rollout request: a bad plan, or a state that does
// not allow the change.
var ErrRollout = errors.New("firmware: rollout")

// ErrNoRollout is returned for a rollout id the gateway does not know.
var ErrNoRollout = errors.New("firmware: no such rollout")

// Range is the counters a rollout takes devices from, both ends included.
type Range struct{ Min, Max uint64 }

// AnyCounter is the range of every counter.
var AnyCounter = Range{0, math.MaxUint64}

// ParseRange reads "*" (any), "N", "A-B" or "<N".
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	num := func(v string) (uint64, error) { return strconv.ParseUint(strings.TrimSpace(v), 10, 64) }
	bad := fmt.Errorf("%w: range %q: want *, N, A-B or <N (device counters)", ErrRollout, s)
	switch {
	case s == "*" || s == "":
		return AnyCounter, nil
	case strings.HasPrefix(s, "<"):
		n, err := num(s[1:])
		if err != nil || n == 0 {
			return Range{}, bad
		}
		return Range{0, n - 1}, nil
	case strings.Contains(s, "-"):
		a, b, _ := strings.Cut(s, "-")
		lo, err1 := num(a)
		hi, err2 := num(b)
		if err1 != nil || err2 != nil || lo > hi {
			return Range{}, bad
		}
		return Range{lo, hi}, nil
	}
	n, err := num(s)
	if err != nil {
		return Range{}, bad
	}
	return Range{n, n}, nil
}

func (r Range) contains(c uint64) bool { return c >= r.Min && c <= r.Max }

func (r Range) String() string {
	switch {
	case r == AnyCounter:
		return "*"
	case r.Min == r.Max:
		return strconv.FormatUint(r.Min, 10)
	case r.Min == 0:
		return "<" + strconv.FormatUint(r.Max+1, 10)
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// MarshalText writes the range as ParseRange reads it.
func (r Range) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (r *Range) UnmarshalText(b []byte) (err error) {
	*r, err = ParseRange(string(b))
	return err
}

// Threshold is how many failures a rollout takes before it halts: a count, or a
// percentage of the devices it took in.
type Threshold struct {
	N       int
	Percent bool
}

// ParseThreshold reads "K" or "P%".
func ParseThreshold(s string) (Threshold, error) {
	s = strings.TrimSpace(s)
	t := Threshold{}
	v, pct := strings.CutSuffix(s, "%")
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || (pct && n > 100) {
		return t, fmt.Errorf("%w: max failures %q: want a count (2) or a percentage (10%%)", ErrRollout, s)
	}
	return Threshold{N: n, Percent: pct}, nil
}

func (t Threshold) String() string {
	if t.Percent {
		return strconv.Itoa(t.N) + "%"
	}
	return strconv.Itoa(t.N)
}

// MarshalText writes the threshold as ParseThreshold reads it.
func (t Threshold) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (t *Threshold) UnmarshalText(b []byte) (err error) {
	*t, err = ParseThreshold(string(b))
	return err
}

// passed reports whether failures of total devices are more than the threshold allows.
func (t Threshold) passed(failures, total int) bool {
	if t.Percent {
		return failures*100 > t.N*total
	}
	return failures > t.N
}

// ParseWaves reads "10%,50%,100%": each wave's share of the devices after the canary,
// cumulative, growing, the last 100%.
func ParseWaves(s string) ([]int, error) {
	var waves []int
	for _, w := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(w), "%"))
		if err != nil || n < 1 || n > 100 || (len(waves) > 0 && n <= waves[len(waves)-1]) {
			return nil, fmt.Errorf("%w: waves %q: want growing percentages ending at 100%% (10%%,50%%,100%%)", ErrRollout, s)
		}
		waves = append(waves, n)
	}
	if len(waves) == 0 || waves[len(waves)-1] != 100 {
		return nil, fmt.Errorf("%w: waves %q: the last wave must be 100%%", ErrRollout, s)
	}
	return waves, nil
}

// RolloutPlan is what a rollout is asked to do.
type RolloutPlan struct {
	Type string `json:"type"`
	From *Range `json:"from,omitempty"` // nil: any counter below the image's
	// To is the version name, or the counter, of a published image of Type.
	To          string    `json:"to"`
	Canary      int       `json:"canary,omitempty"`
	Waves       []int     `json:"waves,omitempty"` // nil: one wave, 100%
	MaxFailures Threshold `json:"max_failures"`
	// DeviceTimeout is how long, in seconds, a device of an open wave has to end healthy
	// or failed; past it, it counts as failed (offline, or stuck). 0: DefaultDeviceTimeout.
	DeviceTimeout int64 `json:"device_timeout_seconds,omitempty"`
}

// DefaultDeviceTimeout is a rollout's device timeout when its plan names none.
const DefaultDeviceTimeout = 30 * time.Minute

// Rollout is a rollout's state, as the API shows it and the gateway keeps it.
type Rollout struct {
	ID          string    `json:"id"`
	Type        string    `json:"type"`
	From        Range     `json:"from"`
	Version     string    `json:"version"` // of the image rolled out
	Counter     uint64    `json:"counter"`
	Canary      int       `json:"canary"`
	Waves       []int     `json:"waves"`
	MaxFailures Threshold `json:"max_failures"`
	// DeviceTimeout is the plan's, in seconds.
	DeviceTimeout int64  `json:"device_timeout_seconds"`
	State         string `json:"state"`
	Reason        string `json:"reason,omitempty"` // why it halted, or who stopped it
	// Wave is the open wave: devices of waves up to it are offered the image. With a
	// canary, wave 0 is the canary and wave i is Waves[i-1].
	Wave    int                       `json:"wave"`
	Devices map[string]*RolloutDevice `json:"devices"`
	Created time.Time                 `json:"created"`
	Updated time.Time                 `json:"updated"`
}

// RolloutDevice is one device of a rollout.
type RolloutDevice struct {
	Wave   int    `json:"wave"`
	Status string `json:"status"` // DeviceWaiting, or the protocol status it last reported
	Error  string `json:"error,omitempty"`
	// Since is when its wave opened for it (or the rollout resumed): its device timeout
	// runs from there. Zero while its wave is not open.
	Since time.Time `json:"since,omitzero"`
}

// waves is the number of waves, the canary one included.
func (r *Rollout) waves() int {
	if r.Canary > 0 {
		return len(r.Waves) + 1
	}
	return len(r.Waves)
}

// WaveName is how people call wave i: canary, or its percentage.
func (r *Rollout) WaveName(i int) string {
	if r.Canary > 0 {
		if i == 0 {
			return "canary"
		}
		i--
	}
	if i < 0 || i >= len(r.Waves) {
		return "?"
	}
	return strconv.Itoa(r.Waves[i]) + "%"
}

// finished reports whether a device's status is an end: healthy or failed.
func finished(status string) bool { return status == StatusHealthy || status == StatusFailed }

// assign puts the devices, sorted, into the waves: the first Canary in the canary, the
// rest by the waves' cumulative shares (rounded up, so that no wave of a few devices is
// empty).
func (r *Rollout) assign(devices []string) {
	slices.Sort(devices)
	canary := min(r.Canary, len(devices))
	for i, d := range devices {
		w := 0
		if i >= canary {
			k, n := i-canary, len(devices)-canary
			for j, pct := range r.Waves {
				if k < (n*pct+99)/100 {
					w = j
					break
				}
			}
			if r.Canary > 0 {
				w++
			}
		}
		r.Devices[d] = &RolloutDevice{Wave: w, Status: DeviceWaiting}
	}
}

// join takes in a device that appeared after the start: into the open wave (the last
// once done), or the first after the canary while the canary is open (it was chosen at
// the start).
func (r *Rollout) join(device string) *RolloutDevice {
	w := r.Wave
	if r.Canary > 0 && w == 0 {
		w = 1
	}
	d := &RolloutDevice{Wave: w, Status: DeviceWaiting}
	if w <= r.Wave {
		d.Since = r.Updated
	}
	r.Devices[device] = d
	return d
}

// advance halts the rollout if its failures call for it, else opens the next waves while
// the open one is finished. It reports whether anything changed and the devices whose
// wave opened.
func (r *Rollout) advance(now time.Time) (changed bool, opened []string) {
	for r.State == RolloutRunning {
		if reason := r.haltReason(); reason != "" {
			r.State, r.Reason, r.Updated = RolloutHalted, reason, now
			return true, opened
		}
		members, ended := 0, 0
		for _, d := range r.Devices {
			if d.Wave == r.Wave {
				members++
				if finished(d.Status) {
					ended++
				}
			}
		}
		last := r.Wave == r.waves()-1
		if ended < members || (last && len(r.Devices) == 0) {
			return changed, opened // a rollout without devices yet waits for some
		}
		if last {
			r.State, r.Updated = RolloutDone, now
			return true, opened
		}
		r.Wave++
		r.Updated, changed = now, true
		for id, d := range r.Devices {
			if d.Wave == r.Wave {
				d.Since = now
				opened = append(opened, id)
			}
		}
	}
	return changed, opened
}

// haltReason is why the rollout must halt now, or "".
func (r *Rollout) haltReason() string {
	var failed []string
	canaryFailed := false
	for id, d := range r.Devices {
		if d.Status == StatusFailed {
			failed = append(failed, id+": "+d.Error)
			canaryFailed = canaryFailed || (r.Canary > 0 && d.Wave == 0)
		}
	}
	slices.Sort(failed)
	switch {
	case canaryFailed && r.Wave == 0:
		return "the canary failed, so no wave started: " + strings.Join(failed, "; ")
	case r.MaxFailures.passed(len(failed), len(r.Devices)):
		return fmt.Sprintf("%d of %d devices failed, more than --max-failures %s allows: %s",
			len(failed), len(r.Devices), r.MaxFailures, strings.Join(failed, "; "))
	}
	return ""
}

// clone is a deep copy, for callers outside the server's lock.
func (r *Rollout) clone() Rollout {
	c := *r
	c.Waves = slices.Clone(r.Waves)
	c.Devices = make(map[string]*RolloutDevice, len(r.Devices))
	for id, d := range r.Devices {
		dd := *d
		c.Devices[id] = &dd
	}
	return c
}

// maxRolloutsKept bounds the finished rollouts the gateway keeps for their history.
const maxRolloutsKept = 50

// RolloutBook is the server's rollouts, oldest first, kept in one JSON file written
// whole (atomicfile) on each change that matters after a restart: a rollout created or
// stopped, a wave opened, a device taken in, healthy or failed. What a device is doing
// in between comes back with its retained state. The server's lock guards it.
type RolloutBook struct {
	path string // "": in memory only
	list []*Rollout
	next int // the number of the next id
}

// OpenRolloutBook reads the rollouts kept at path; a missing file is none.
func OpenRolloutBook(path string) (*RolloutBook, error) {
	b := &RolloutBook{path: path, next: 1}
	if path == "" {
		return b, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return b, nil
	}
	if err == nil {
		err = json.Unmarshal(data, &b.list)
	}
	if err != nil {
		return nil, fmt.Errorf("firmware: rollouts %s: %w", path, err)
	}
	for _, r := range b.list {
		if n, err := strconv.Atoi(strings.TrimPrefix(r.ID, "r")); err == nil && n >= b.next {
			b.next = n + 1
		}
	}
	return b, nil
}

func (b *RolloutBook) save() error {
	if b.path == "" {
		return nil
	}
	for i := 0; len(b.list) > maxRolloutsKept && i < len(b.list); {
		if r := b.list[i]; b.governing(r.Type) != r {
			b.list = slices.Delete(b.list, i, i+1)
		} else {
			i++
		}
	}
	data, _ := json.Marshal(b.list)
	if err := atomicfile.Write(b.path, data, 0o644); err != nil {
		return fmt.Errorf("firmware: rollouts: %w", err)
	}
	return nil
}

// governing is the rollout that decides the offers of type typ, or nil: the newest of
// the type, whatever its state, so that stopping or finishing a rollout never lets an
// image out to every device at once. Only a type that never had a rollout is offered
// each newly published image at once.
func (b *RolloutBook) governing(typ string) *Rollout {
	for _, r := range slices.Backward(b.list) {
		if r.Type == typ {
			return r
		}
	}
	return nil
}

func (b *RolloutBook) get(id string) *Rollout {
	for _, r := range b.list {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// offering reports whether the rollout offers its image to the devices of its open
// waves: running, or done (a device that appears later is still offered it).
func (r *Rollout) offering() bool { return r.State == RolloutRunning || r.State == RolloutDone }

func (r *Rollout) deviceTimeout() time.Duration { return time.Duration(r.DeviceTimeout) * time.Second }

// overdue lists the devices of r's open waves past their device timeout at now, and
// returns the earliest timeout still ahead (zero: none).
func (r *Rollout) overdue(now time.Time) (late []string, next time.Time) {
	if r.State != RolloutRunning {
		return nil, time.Time{}
	}
	for id, d := range r.Devices {
		if d.Wave > r.Wave || finished(d.Status) || d.Since.IsZero() {
			continue
		}
		by := d.Since.Add(r.deviceTimeout())
		if !now.Before(by) {
			late = append(late, id)
		} else if next.IsZero() || by.Before(next) {
			next = by
		}
	}
	slices.Sort(late)
	return late, next
}
