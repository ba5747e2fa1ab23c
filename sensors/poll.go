package sensors

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/moongate/moongate/internal/logkey"
)

// Polling policy.
const (
	// failThreshold consecutive failed polls put a sensor in backoff and
	// log it, once.
	failThreshold = 3
	// maxBackoff caps the poll interval of a failing sensor (or its own
	// interval, when that is longer).
	maxBackoff = 5 * time.Minute
	// busRetries is how often one poll repeats a failed hardware read: a NACK
	// or arbitration loss on a shared bus is usually gone a moment later.
	busRetries = 2
	retryDelay = 20 * time.Millisecond
	// maxPhase spreads the first polls of sensors so ones on the same bus
	// do not start in step; maxJitter keeps them from falling into step.
	maxPhase  = 2 * time.Second
	maxJitter = time.Second
)

// poll reads s every s.cfg.every() until ctx is done.
func (m *Manager) poll(ctx context.Context, s *sensor, h Handler) {
	every := s.cfg.every()
	anchor := m.start.Add(randDuration(s, min(every, maxPhase)))
	next := anchor
	if m.failures(s) >= failThreshold {
		next = m.clock.Now().Add(backoff(every, failThreshold))
	}
	for {
		s.mu.Lock()
		s.st.NextPoll = next
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-m.clock.After(next.Sub(m.clock.Now())):
		}
		m.pollOnce(s, h)
		now := m.clock.Now()
		if n := m.failures(s); n >= failThreshold {
			next = now.Add(backoff(every, n))
			continue
		}
		// The next slot of a drift-free schedule, plus a little jitter.
		k := now.Sub(anchor)/every + 1
		next = anchor.Add(k*every + randDuration(s, min(every/10, maxJitter)))
	}
}

// pollOnce reads s, updates its status, logs the start and end of a
// failure streak once each, and hands a reading to h.
func (m *Manager) pollOnce(s *sensor, h Handler) {
	values, attempts, err := m.read(s)
	now := m.clock.Now()
	s.mu.Lock()
	s.st.Retries += uint64(attempts - 1)
	if err != nil {
		s.st.Errors += uint64(attempts)
		s.st.ConsecutiveFailures++
		s.st.LastError = err.Error()
		n := s.st.ConsecutiveFailures
		switch {
		case n >= failThreshold && s.st.State != StateMissing:
			s.st.State = StateBackoff
		case n < failThreshold:
			s.st.State = StateFailing
		}
		report := n >= failThreshold && !s.reported
		s.reported = s.reported || report
		s.mu.Unlock()
		if report {
			m.log.Warn("sensor failing; polling less often until it recovers",
				logkey.Sensor, s.name, logkey.Driver, s.cfg.Driver, "failures", n,
				"retry_in", backoff(s.cfg.every(), n), logkey.Err, err)
		}
		return
	}
	s.st.Errors += uint64(attempts - 1)
	recovered := s.reported
	failures := s.st.ConsecutiveFailures
	s.reported = false
	s.st.State = StateOK
	s.st.ConsecutiveFailures = 0
	s.st.Reads++
	s.st.LastReading = now
	s.st.Values = maps.Clone(values)
	s.mu.Unlock()
	if recovered {
		m.log.Info("sensor recovered", logkey.Sensor, s.name, logkey.Driver, s.cfg.Driver, "failures", failures)
	}
	h.HandleReading(Reading{Sensor: s.name, Values: values, TS: now})
}

// read reads s, opening its hardware first if that failed before, and
// retries hardware reads. It returns the number of attempts made.
func (m *Manager) read(s *sensor) (map[string]float64, int, error) {
	if s.read == nil {
		if err := m.open(s); err != nil {
			return nil, 1, fmt.Errorf("sensor %s: %w", s.name, err)
		}
	}
	attempts := 1
	if s.hardware {
		attempts += busRetries
	}
	var err error
	for i := range attempts {
		if i > 0 {
			m.sleep(retryDelay)
		}
		var v map[string]float64
		if v, err = m.readOnce(s); err == nil {
			return v, i + 1, nil
		}
	}
	return nil, attempts, err
}

// readOnce runs the driver with its bus to itself. A driver that panics on
// data it did not expect fails this reading instead of the gateway.
func (m *Manager) readOnce(s *sensor) (v map[string]float64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("driver %s panicked: %v", s.cfg.Driver, r)
		}
	}()
	if s.bus != nil {
		s.bus.mu.Lock()
		defer s.bus.mu.Unlock()
	}
	return s.read()
}

func (m *Manager) failures(s *sensor) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.ConsecutiveFailures
}

// backoff is the wait after the nth consecutive failure: every doubled for
// each failure past the threshold, capped.
func backoff(every time.Duration, n int) time.Duration {
	limit := max(maxBackoff, every)
	shift := min(n-failThreshold+1, 20)
	if d := every << shift; d > 0 && d < limit {
		return d
	}
	return limit
}

// randDuration draws from [0, d) on the sensor's own source.
func randDuration(s *sensor, d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(s.rand.Int64N(int64(d)))
}
