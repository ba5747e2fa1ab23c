package firmware

import (
	"fmt"
	"strconv"
	"time"

	"github.com/moongate/moongate/internal/logkey"
)

// The server's side of rollouts: what a governed device is offered, what its states do
// to its rollout, and the operator's requests. Everything here runs under s.mu.

// offerFor is the image to offer device in st: with a rollout governing its type, the
// rollout's image once the device's wave is open; else the newest image, unless images
// go out by rollouts only. Never one not
// newer than the device runs, nor the one it failed with.
func (s *Server) offerFor(device string, st State, now time.Time, failed uint64) Manifest {
	r := s.book.governing(st.Type)
	if r == nil {
		if s.opts.RolloutsOnly {
			return Manifest{}
		}
		return s.newest(st, now, failed)
	}
	d := s.member(r, device, st, now)
	if d == nil || !r.offering() || d.Wave > r.Wave || st.Counter >= r.Counter || failed == r.Counter {
		return Manifest{}
	}
	m, ok := s.images.Get(st.Type, r.Counter, now)
	if !ok {
		return Manifest{}
	}
	return m
}

// member is device's place in r: taken in now if r targets it and it appeared after the
// start (new, or back from offline); nil if r does not target it.
func (s *Server) member(r *Rollout, device string, st State, now time.Time) *RolloutDevice {
	if d := r.Devices[device]; d != nil {
		return d
	}
	if !r.offering() || !r.From.contains(st.Counter) || st.Counter >= r.Counter {
		return nil
	}
	d := r.join(device)
	r.Updated = now
	s.opts.Logger.Info("firmware: a device joins the rollout", "rollout", r.ID, "device", device, "wave", r.WaveName(d.Wave))
	s.saveRollouts()
	return d
}

// observe follows a governed device's state in its rollout, then advances the rollout.
func (s *Server) observe(device string, st State, now time.Time) {
	r := s.book.governing(st.Type)
	if r == nil {
		return
	}
	d := r.Devices[device]
	if d == nil {
		return
	}
	status, errText := st.Status, st.Error
	switch {
	case st.Counter >= r.Counter && (st.Status == StatusIdle || st.Status == StatusHealthy):
		status, errText = StatusHealthy, ""
	case st.Status == StatusFailed && st.Target != r.Counter:
		return // a failure with another image
	case d.Wave > r.Wave || st.Status == StatusIdle:
		status = DeviceWaiting
	}
	s.setDevice(r, device, d, status, errText, now)
}

// rolloutFailed records that device failed r's image (the gateway's health window, or
// its own failed state).
func (s *Server) rolloutFailed(device, typ string, counter uint64, reason string, now time.Time) {
	r := s.book.governing(typ)
	if r == nil || r.Counter != counter {
		return
	}
	if d := r.Devices[device]; d != nil {
		s.setDevice(r, device, d, StatusFailed, reason, now)
	}
}

// setDevice changes a device's status in r, keeps what a restart needs, and advances r.
func (s *Server) setDevice(r *Rollout, device string, d *RolloutDevice, status, errText string, now time.Time) {
	if d.Status == status && d.Error == errText {
		return
	}
	if d.Status == StatusFailed && status != StatusHealthy {
		return // failed stays failed, unless the device later runs the image after all
	}
	terminal := status != d.Status && (finished(status) || finished(d.Status))
	d.Status, d.Error, r.Updated = status, errText, now
	if s.advance(r, now) || terminal {
		s.saveRollouts()
	}
}

// advance advances r and offers the image to the devices whose wave opened; it reports
// whether r changed.
func (s *Server) advance(r *Rollout, now time.Time) bool {
	changed, opened := r.advance(now)
	if !changed {
		return false
	}
	switch r.State {
	case RolloutHalted:
		s.opts.Logger.Warn("firmware: rollout halted", "rollout", r.ID, "type", r.Type, "counter", r.Counter, "reason", r.Reason)
	case RolloutDone:
		s.opts.Logger.Info("firmware: rollout done", "rollout", r.ID, "type", r.Type, "counter", r.Counter)
	default:
		s.opts.Logger.Info("firmware: rollout wave opened", "rollout", r.ID, "wave", r.WaveName(r.Wave), "devices", len(opened))
	}
	if len(opened) > 0 {
		s.offerAll(r.Type, now, opened)
	}
	s.wakeHealth() // new device timeouts
	return true
}

// wakeHealth has watchHealth look at the deadlines again.
func (s *Server) wakeHealth() {
	select {
	case s.healthSig <- struct{}{}:
	default:
	}
}

// offerAll offers what offerFor says to the listed devices that are waiting for an
// image: idle, healthy, or failed with an older one.
func (s *Server) offerAll(typ string, now time.Time, devices []string) {
	for _, d := range devices {
		ses := s.devices[d]
		if ses == nil {
			continue
		}
		st := ses.state
		if st.Type != typ || ses.offer.Counter != 0 || (st.Status != StatusIdle && st.Status != StatusHealthy && st.Status != StatusFailed) {
			continue
		}
		if next := s.offerFor(d, st, now, ses.failed); next.Counter != 0 {
			ses.offer = next
			s.offers[d] = true
		}
	}
	select {
	case s.offerSig <- struct{}{}:
	default:
	}
}

func (s *Server) saveRollouts() {
	if err := s.book.save(); err != nil {
		s.opts.Logger.Error("firmware: the rollouts are not kept across a restart", logkey.Err, err)
	}
}

// CreateRollout starts a rollout of plan: the devices known now that it targets are
// put in its waves, and the canary (or the first wave) is offered the image at once.
func (s *Server) CreateRollout(plan RolloutPlan) (Rollout, error) {
	now := s.opts.Now()
	if !validType(plan.Type) {
		return Rollout{}, fmt.Errorf("%w: type %q: letters, digits, '.', '_' and '-'", ErrRollout, plan.Type)
	}
	if plan.Canary < 0 {
		return Rollout{}, fmt.Errorf("%w: canary %d: want 0 or more devices", ErrRollout, plan.Canary)
	}
	if plan.Waves == nil {
		plan.Waves = []int{100}
	}
	if _, err := ParseWaves(wavesString(plan.Waves)); err != nil {
		return Rollout{}, err
	}
	from := AnyCounter
	if plan.From != nil {
		from = *plan.From
	}
	m, ok := s.findImage(plan.Type, plan.To, now)
	if !ok {
		return Rollout{}, fmt.Errorf("%w: no published, unexpired image of type %s is version or counter %q (moongate firmware list)", ErrRollout, plan.Type, plan.To)
	}
	if from != AnyCounter && from.Max >= m.Counter {
		return Rollout{}, fmt.Errorf("%w: --from %s takes in devices on counters at or above %d, the counter of %s %s: no device is offered a downgrade. "+
			"To roll back, sign the old image again with a counter above theirs (moongate firmware sign KEY OLD.bin %s VERSION --counter N), publish it and roll that out",
			ErrRollout, from, m.Counter, m.Type, m.Version, m.Type)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.book.governing(plan.Type); r != nil && (r.State == RolloutRunning || r.State == RolloutPaused) {
		return Rollout{}, fmt.Errorf("%w: rollout %s of %s is %s: abort it first", ErrRollout, r.ID, r.Type, r.State)
	}
	if plan.DeviceTimeout < 0 {
		return Rollout{}, fmt.Errorf("%w: device timeout %ds: want 0 (the default) or more", ErrRollout, plan.DeviceTimeout)
	}
	if plan.DeviceTimeout == 0 {
		plan.DeviceTimeout = int64(DefaultDeviceTimeout / time.Second)
	}
	r := &Rollout{ID: "r" + strconv.Itoa(s.book.next), Type: plan.Type, From: from, Version: m.Version, Counter: m.Counter,
		Canary: plan.Canary, Waves: plan.Waves, MaxFailures: plan.MaxFailures, DeviceTimeout: plan.DeviceTimeout,
		State: RolloutRunning, Devices: map[string]*RolloutDevice{}, Created: now, Updated: now}
	var targeted []string
	for d, ses := range s.devices {
		if st := ses.state; st.Type == plan.Type && from.contains(st.Counter) && st.Counter < m.Counter {
			targeted = append(targeted, d)
		}
	}
	r.assign(targeted)
	for _, d := range r.Devices {
		if d.Wave == 0 {
			d.Since = now
		}
	}
	s.book.next++
	s.book.list = append(s.book.list, r)
	s.opts.Logger.Info("firmware: rollout created", "rollout", r.ID, "type", r.Type, logkey.Version, r.Version,
		"counter", r.Counter, "devices", len(r.Devices), "canary", r.Canary, "waves", wavesString(r.Waves), "max_failures", r.MaxFailures.String())
	return s.goOn(r, now)
}

// goOn advances a rollout that (again) runs, offers its image to the devices it now
// admits, and keeps it.
func (s *Server) goOn(r *Rollout, now time.Time) (Rollout, error) {
	s.advance(r, now)
	s.offerAll(r.Type, now, s.deviceIDs())
	s.wakeHealth()
	if err := s.book.save(); err != nil {
		return r.clone(), err
	}
	return r.clone(), nil
}

func (s *Server) deviceIDs() []string {
	ids := make([]string, 0, len(s.devices))
	for d := range s.devices {
		ids = append(ids, d)
	}
	return ids
}

// findImage is the published image of typ whose version name, or else counter, is to.
func (s *Server) findImage(typ, to string, now time.Time) (Manifest, bool) {
	for _, m := range s.images.List() {
		if m.Type == typ && m.Version == to {
			return s.images.Get(typ, m.Counter, now)
		}
	}
	if c, err := strconv.ParseUint(to, 10, 64); err == nil {
		return s.images.Get(typ, c, now)
	}
	return Manifest{}, false
}

func wavesString(waves []int) string {
	var b []byte
	for i, w := range waves {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(w), 10)
		b = append(b, '%')
	}
	return string(b)
}

// Rollouts lists the rollouts the gateway keeps, oldest first.
func (s *Server) Rollouts() []Rollout {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Rollout, 0, len(s.book.list))
	for _, r := range s.book.list {
		out = append(out, r.clone())
	}
	return out
}

// Rollout is the rollout id.
func (s *Server) Rollout(id string) (Rollout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.book.get(id)
	if r == nil {
		return Rollout{}, fmt.Errorf("%w: %s", ErrNoRollout, id)
	}
	return r.clone(), nil
}

// PauseRollout stops new offers of a running rollout; downloads under way go on.
func (s *Server) PauseRollout(id string) (Rollout, error) {
	return s.changeRollout(id, RolloutPaused, "paused by the operator", RolloutRunning)
}

// ResumeRollout lets a paused rollout go on.
func (s *Server) ResumeRollout(id string) (Rollout, error) {
	return s.changeRollout(id, RolloutRunning, "", RolloutPaused)
}

// AbortRollout stops a rollout for good: its type's devices are offered nothing more until
// a new rollout.
func (s *Server) AbortRollout(id string) (Rollout, error) {
	return s.changeRollout(id, RolloutAborted, "aborted by the operator", RolloutRunning, RolloutPaused, RolloutHalted)
}

func (s *Server) changeRollout(id, to, reason string, from ...string) (Rollout, error) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.book.get(id)
	if r == nil {
		return Rollout{}, fmt.Errorf("%w: %s", ErrNoRollout, id)
	}
	allowed := false
	for _, f := range from {
		allowed = allowed || r.State == f
	}
	if !allowed || (to == RolloutRunning && s.book.governing(r.Type) != r) {
		return r.clone(), fmt.Errorf("%w: rollout %s is %s: it cannot become %s", ErrRollout, id, r.State, to)
	}
	r.State, r.Reason, r.Updated = to, reason, now
	s.opts.Logger.Info("firmware: rollout "+to, "rollout", r.ID, "type", r.Type)
	if to == RolloutRunning {
		for _, d := range r.Devices { // paused time does not count against the devices
			if d.Wave <= r.Wave && !finished(d.Status) {
				d.Since = now
			}
		}
		return s.goOn(r, now)
	}
	if err := s.book.save(); err != nil {
		return r.clone(), err
	}
	return r.clone(), nil
}

// expireRollouts fails the devices past their rollout's device timeout and returns the
// earliest timeout still ahead (zero: none). It runs under s.mu.
func (s *Server) expireRollouts(now time.Time) time.Time {
	var next time.Time
	for _, r := range s.book.list {
		if s.book.governing(r.Type) != r {
			continue
		}
		late, n := r.overdue(now)
		for _, id := range late {
			reason := fmt.Sprintf("no result within %s of its wave opening (rollout device timeout)", r.deviceTimeout())
			s.opts.Logger.Warn("firmware: a rollout device timed out: counted as failed", "rollout", r.ID, "device", id, "timeout", r.deviceTimeout())
			s.setDevice(r, id, r.Devices[id], StatusFailed, reason, now)
		}
		if !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	return next
}
