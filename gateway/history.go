package gateway

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/moongate/moongate/gateway/console"
)

// What the gateway keeps so that a console opens with a picture instead of empty plots:
// each sensor's readings of the last historyAge, at most historyReadings of them, and
// the last historyTransitions sink transitions. Memory only: a restart starts afresh.
const (
	historyAge         = 10 * time.Minute
	historyReadings    = 600 // per sensor: 10 minutes of a 1 s poll
	historyTransitions = 100
)

// history is the recent past of the live stream's sensor and sync messages. The zero
// value is ready to use. Readings come at poll rates and transitions rarely, so one
// mutex is enough.
type history struct {
	mu       sync.Mutex
	readings map[string][]console.Sensor // per sensor, oldest first
	sinks    []console.Sync              // oldest first
}

func (h *history) sensor(m console.Sensor) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.readings == nil {
		h.readings = map[string][]console.Sensor{}
	}
	rs := append(h.readings[m.Sensor], m)
	h.readings[m.Sensor] = rs[max(len(rs)-historyReadings, oldReadings(rs, m.TS)):]
}

// oldReadings counts the readings at the start of rs older than historyAge before now (ms).
func oldReadings(rs []console.Sensor, now int64) int {
	cut := now - historyAge.Milliseconds()
	n := 0
	for n < len(rs) && rs[n].TS < cut {
		n++
	}
	return n
}

func (h *history) sync(m console.Sync) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sinks = append(h.sinks, m)
	if len(h.sinks) > historyTransitions {
		h.sinks = append(h.sinks[:0], h.sinks[len(h.sinks)-historyTransitions:]...)
	}
}

// messages returns the readings of the last historyAge, by sensor name and then oldest
// first, and the kept transitions, oldest first.
func (h *history) messages(now time.Time) (readings []console.Message, transitions []console.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(h.readings)) {
		rs := h.readings[name]
		for _, r := range rs[oldReadings(rs, now.UnixMilli()):] {
			readings = append(readings, r)
		}
	}
	for _, t := range h.sinks {
		transitions = append(transitions, t)
	}
	return readings, transitions
}

// historyResponse is GET /api/v1/history (API_SHAPES.md): live messages from before the
// client connected, in the live stream's shapes.
type historyResponse struct {
	Sensor []json.RawMessage `json:"sensor"`
	Sync   []json.RawMessage `json:"sync"`
}

func (a *api) serveHistory(w http.ResponseWriter, _ *http.Request) {
	readings, transitions := a.live.recent.messages(a.clock.Now())
	out := historyResponse{Sensor: []json.RawMessage{}, Sync: []json.RawMessage{}}
	for _, set := range []struct {
		from []console.Message
		to   *[]json.RawMessage
	}{{readings, &out.Sensor}, {transitions, &out.Sync}} {
		for _, m := range set.from {
			b, err := console.Marshal(m)
			if err != nil {
				writeError(w, http.StatusInternalServerError, err.Error())
				return
			}
			*set.to = append(*set.to, b)
		}
	}
	writeJSON(w, http.StatusOK, out)
}
