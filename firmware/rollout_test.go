package firmware

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseRollout(t *testing.T) {
	for in, want := range map[string]Range{"*": AnyCounter, "3": {3, 3}, "2-5": {2, 5}, "<4": {0, 3}} {
		got, err := ParseRange(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseRange(%q) = %v (%s), %v; want %v", in, got, got, err, want)
		}
	}
	for _, bad := range []string{"5-2", "<0", "x", "1-", "-3"} {
		if _, err := ParseRange(bad); !errors.Is(err, ErrRollout) {
			t.Errorf("ParseRange(%q): %v, want ErrRollout", bad, err)
		}
	}
	if w, err := ParseWaves("10%,50%,100%"); err != nil || !slices.Equal(w, []int{10, 50, 100}) {
		t.Errorf("ParseWaves: %v %v", w, err)
	}
	for _, bad := range []string{"50%,10%,100%", "10%,50%", "0%,100%", "x"} {
		if _, err := ParseWaves(bad); err == nil {
			t.Errorf("ParseWaves(%q) accepted", bad)
		}
	}
	for in, passed := range map[string][2]bool{"0": {true, true}, "2": {false, true}, "20%": {false, true}, "50%": {false, false}} {
		th, err := ParseThreshold(in)
		if err != nil {
			t.Fatal(err)
		}
		// 1 and 3 failures of 10 devices.
		if got := [2]bool{th.passed(1, 10), th.passed(3, 10)}; got != passed {
			t.Errorf("threshold %s: passed %v, want %v", in, got, passed)
		}
	}
}

// simDevice is a device as the rollout model sees it: it runs counter 1, and when offered
// counter 7 it either applies it and reports healthy, or fails.
type simDevice struct {
	id      string
	bad     bool
	counter uint64
	status  string
}

func (d *simDevice) state() string {
	target := ""
	if d.status == StatusFailed || d.status == StatusApplied {
		target = `,"target":7`
	}
	return fmt.Sprintf(`{"type":"esp32-env","version":"v","counter":%d,"status":%q%s}`, d.counter, d.status, target)
}

// A rollout over random device fates, random interleavings and gateway restarts (the
// rollouts and the devices' retained states read again), checked at every step against
// what the plan allows: no device is offered the image before its wave opens, a wave
// opens only once the one before is all healthy or failed, a failed canary or failures
// past the threshold halt it and nothing more is offered, and a rollout without too many
// failures ends with every good device healthy.
func TestRolloutModel(t *testing.T) {
	for seed := range uint64(60) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { rolloutModel(t, seed) })
	}
}

func rolloutModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	dir := t.TempDir()
	s, _, _, m := newTestServer(t, filepath.Join(dir, "images"))
	bookPath := filepath.Join(dir, "rollouts.json")
	restart := func() {
		book, err := OpenRolloutBook(bookPath)
		if err != nil {
			t.Fatal(err)
		}
		s = NewServer(&recorder{}, s.images, ServerOptions{ChunkSize: testChunk, DeviceRate: 1 << 20, TotalRate: 1 << 20,
			Now: func() time.Time { return testNow }, Logger: slog.New(slog.DiscardHandler), Rollouts: book, RolloutsOnly: true})
	}
	restart()
	n := 2 + rng.IntN(12)
	devices := make([]*simDevice, n)
	for i := range devices {
		devices[i] = &simDevice{id: fmt.Sprintf("d%02d", i), bad: rng.IntN(5) == 0, counter: 1, status: StatusIdle}
		s.Handle("moongate/devices/"+devices[i].id+"/fw/state", []byte(devices[i].state()))
	}
	plan := RolloutPlan{Type: "esp32-env", To: m.Version, Canary: rng.IntN(3), Waves: [][]int{{100}, {50, 100}, {10, 50, 100}}[rng.IntN(3)],
		MaxFailures: Threshold{N: rng.IntN(3)}}
	r, err := s.CreateRollout(plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Devices) != n {
		t.Fatalf("the rollout took %d of %d devices", len(r.Devices), n)
	}
	wave := func(id string) int { return r.Devices[id].Wave }
	offered := func(d *simDevice) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		ses := s.devices[d.id]
		return ses != nil && ses.offer.Counter == m.Counter
	}
	offeredWhileRunning := map[string]bool{} // a stopped rollout does not take back an offer
	noteOffers := func() {
		if now, _ := s.Rollout(r.ID); now.State == RolloutRunning {
			for _, d := range devices {
				if offered(d) {
					offeredWhileRunning[d.id] = true
				}
			}
		}
	}
	noteOffers()
	for step := 0; step < 40*n; step++ {
		if rng.IntN(15) == 0 {
			restart()
			for _, d := range devices { // the broker delivers the retained states again
				s.Handle("moongate/devices/"+d.id+"/fw/state", []byte(d.state()))
				noteOffers()
			}
		}
		now, err := s.Rollout(r.ID)
		if err != nil {
			t.Fatal(err)
		}
		d := devices[rng.IntN(n)]
		if offered(d) {
			if wave(d.id) > now.Wave {
				t.Fatalf("step %d: %s of wave %d offered while wave %d is open", step, d.id, wave(d.id), now.Wave)
			}
			if now.State == RolloutRunning {
				offeredWhileRunning[d.id] = true
			} else if !offeredWhileRunning[d.id] {
				t.Fatalf("step %d: %s offered the image by a rollout %s", step, d.id, now.State)
			}
		}
		switch {
		case d.status == StatusIdle && d.counter == 1 && offered(d):
			d.status = StatusApplied
		case d.status == StatusApplied && d.bad:
			d.status = StatusFailed
		case d.status == StatusApplied:
			d.counter, d.status = 7, StatusHealthy
		default:
			continue
		}
		s.Handle("moongate/devices/"+d.id+"/fw/state", []byte(d.state()))
		noteOffers()
		after, _ := s.Rollout(r.ID)
		for w := 0; w < after.Wave; w++ {
			for id, rd := range after.Devices {
				if rd.Wave == w && rd.Status != StatusHealthy && rd.Status != StatusFailed {
					t.Fatalf("step %d: wave %d is open with %s of wave %d %s", step, after.Wave, id, w, rd.Status)
				}
			}
		}
	}
	final, _ := s.Rollout(r.ID)
	failed := 0
	canaryFailed := false
	for _, d := range devices {
		if d.status == StatusFailed {
			failed++
			canaryFailed = canaryFailed || (final.Canary > 0 && final.Devices[d.id].Wave == 0)
		}
	}
	switch {
	case canaryFailed || failed > plan.MaxFailures.N:
		if final.State != RolloutHalted || final.Reason == "" {
			t.Fatalf("%d failed (canary %v, max %d): rollout %s %q, want halted with a reason", failed, canaryFailed, plan.MaxFailures.N, final.State, final.Reason)
		}
	case final.State != RolloutDone:
		t.Fatalf("%d failed of %d (max %d): rollout %s at wave %d %+v, want done", failed, n, plan.MaxFailures.N, final.State, final.Wave, final.Devices)
	default:
		for _, d := range devices {
			if !d.bad && d.counter != 7 {
				t.Fatalf("done, and the good device %s runs counter %d", d.id, d.counter)
			}
		}
	}
}

// A device of an open wave that never ends healthy or failed (offline, stuck) does not
// hold the rollout for ever: past the device timeout it counts as failed.
func TestRolloutDeviceTimeout(t *testing.T) {
	for _, c := range []struct {
		max   int
		state string
	}{{1, RolloutDone}, {0, RolloutHalted}} {
		s, _, _, m := newTestServer(t, t.TempDir())
		now := testNow
		s.opts.Now = func() time.Time { return now }
		s.opts.RolloutsOnly = true
		a, b := &simDevice{id: "a", counter: 1, status: StatusIdle}, &simDevice{id: "b", counter: 1, status: StatusIdle}
		for _, d := range []*simDevice{a, b} {
			s.Handle("moongate/devices/"+d.id+"/fw/state", []byte(d.state()))
		}
		r, err := s.CreateRollout(RolloutPlan{Type: "esp32-env", To: m.Version, MaxFailures: Threshold{N: c.max}, DeviceTimeout: 60})
		if err != nil {
			t.Fatal(err)
		}
		a.counter, a.status = 7, StatusHealthy
		s.Handle("moongate/devices/a/fw/state", []byte(a.state()))
		now = now.Add(59 * time.Second)
		if next := s.expireHealth(); !next.Equal(testNow.Add(time.Minute)) {
			t.Errorf("next deadline %v, want the device timeout at %v", next, testNow.Add(time.Minute))
		}
		now = now.Add(time.Second)
		s.expireHealth()
		got, _ := s.Rollout(r.ID)
		if d := got.Devices["b"]; d.Status != StatusFailed || d.Error != "no result within 1m0s of its wave opening (rollout device timeout)" {
			t.Errorf("the silent device is %s %q", d.Status, d.Error)
		}
		if got.State != c.state {
			t.Errorf("max failures %d: rollout %s (%s), want %s", c.max, got.State, got.Reason, c.state)
		}
	}
}

// A rollout never offers a downgrade: asked to take in devices on the image's counter or
// above, it is refused with the way to roll back (a new signature, a higher counter).
func TestRolloutRefusesADowngrade(t *testing.T) {
	s, _, _, m := newTestServer(t, t.TempDir())
	from := Range{5, 9}
	_, err := s.CreateRollout(RolloutPlan{Type: "esp32-env", To: m.Version, From: &from})
	if !errors.Is(err, ErrRollout) || !strings.Contains(err.Error(), "sign the old image again with a counter above theirs") {
		t.Fatalf("a rollout of counter 7 to devices on 5-9: %v", err)
	}
	if got := s.Rollouts(); len(got) != 0 {
		t.Fatalf("a refused rollout was kept: %+v", got)
	}
}
