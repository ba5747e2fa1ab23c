package gateway

import (
	"cmp"
	"net/http"
	"runtime"
	"sort"
	"time"

	"github.com/moongate/moongate/sensors"
	"github.com/moongate/moongate/sync/store"
)

// The API's views of the running gateway: its status, its sensors, its sinks and outbox.

type brokerDoc struct {
	State   string `json:"state"`
	Addr    string `json:"addr"`
	Clients int    `json:"clients"`
}

type statusDoc struct {
	Version     string      `json:"version"`
	GatewayID   string      `json:"gateway_id"`
	UptimeS     int64       `json:"uptime_s"`
	Broker      brokerDoc   `json:"broker"`
	Sinks       []sinkState `json:"sinks"`
	OutboxDepth int64       `json:"outbox_depth"`
	MemoryBytes uint64      `json:"memory_bytes"` // Go runtime memory obtained from the OS (MemStats.Sys)
	Functions   int         `json:"functions"`
	Sensors     []sensorDoc `json:"sensors,omitempty"`
}

type sinkState struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

func (a *api) getStatus(w http.ResponseWriter, r *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	bs := a.bus.Status()
	doc := statusDoc{
		Version: a.version, GatewayID: a.cfg.Gateway.ID, UptimeS: int64(a.clock.Now().Sub(a.started).Seconds()),
		Broker:      brokerDoc{State: bs.State, Addr: bs.Broker, Clients: bs.Clients},
		OutboxDepth: a.store.Stats().PendingRecords, MemoryBytes: ms.Sys, Functions: len(a.registry.all()),
		Sinks: []sinkState{}, Sensors: a.sensorDocs(),
	}
	for _, s := range a.sinks {
		st := s.Status()
		doc.Sinks = append(doc.Sinks, sinkState{Name: st.Name, State: string(st.State)})
	}
	writeJSON(w, http.StatusOK, doc)
}

type sensorDoc struct {
	Name      string             `json:"name"`
	Driver    string             `json:"driver"`
	Pin       string             `json:"pin,omitempty"`
	Mode      string             `json:"mode,omitempty"` // gpio: in or out
	Pull      string             `json:"pull,omitempty"`
	Sim       bool               `json:"sim,omitempty"`
	State     string             `json:"state,omitempty"`
	Values    map[string]float64 `json:"values,omitempty"`
	LastError string             `json:"last_error,omitempty"`
	At        time.Time          `json:"at,omitzero"`
}

func (a *api) sensorDocs() []sensorDoc {
	if a.sensors == nil {
		return nil
	}
	var out []sensorDoc
	for _, s := range a.sensors.Status() {
		d := sensorDoc{Name: s.Name, Driver: s.Driver, Pin: s.Pin, State: s.State, Values: s.Values,
			LastError: s.LastError, At: s.LastReading}
		if c := a.sensorCfgs[s.Name]; c.Driver == sensors.DriverGPIO {
			d.Mode, d.Pull, d.Sim = cmp.Or(c.Mode, sensors.ModeIn), c.Pull, c.Sim
		}
		out = append(out, d)
	}
	return out
}

type sinkDoc struct {
	Name        string            `json:"name"`
	Kind        string            `json:"kind"` // http, mqtt or jetstream
	State       string            `json:"state"`
	Streams     []string          `json:"streams"`
	LastSuccess time.Time         `json:"last_success,omitzero"`
	LastError   string            `json:"last_error"`
	LastErrorAt time.Time         `json:"last_error_at,omitzero"`
	LagMS       int64             `json:"lag_ms"`
	Pending     int64             `json:"pending"`
	PendingB    int64             `json:"pending_bytes"`
	Delivered   uint64            `json:"delivered"`
	Retried     uint64            `json:"retried"`
	Dropped     uint64            `json:"dropped"`
	DroppedBy   map[string]uint64 `json:"dropped_by,omitempty"`
}

func (a *api) getSync(w http.ResponseWriter, r *http.Request) {
	sinks := []sinkDoc{}
	for i, s := range a.sinks {
		st := s.Status()
		d := sinkDoc{Name: st.Name, Kind: st.Kind, State: string(st.State), Streams: a.cfg.Sync.Sinks[i].Streams,
			LastSuccess: st.LastSuccess, LastError: st.LastError, LastErrorAt: st.LastErrorAt,
			LagMS: st.Lag.Milliseconds(), Pending: st.PendingRecords, PendingB: st.PendingBytes,
			Delivered: st.Delivered, Retried: st.Retried, DroppedBy: st.Dropped}
		for _, n := range st.Dropped {
			d.Dropped += n
		}
		sinks = append(sinks, d)
	}
	st := a.store.Stats()
	d := st.Dropped
	writeJSON(w, http.StatusOK, map[string]any{
		"sinks":    sinks,
		"unrouted": unrouted(st),
		"outbox": map[string]any{"pending": st.PendingRecords, "bytes": st.PendingBytes,
			"max_bytes": int64(a.cfg.Sync.Outbox.MaxBytes), "dropped": d.Quota + d.TTL + d.Rejected,
			"dropped_by": dropsByCause(d), "disk_bytes": st.DiskBytes, "disk_free": st.DiskFree},
	})
}

// unroutedDoc is a stream with records that no sink takes: they wait in the outbox until
// the ttl or on_full policy drops them.
type unroutedDoc struct {
	Stream  string `json:"stream"`
	Pending int64  `json:"pending"`
}

func unrouted(st store.Stats) []unroutedDoc {
	out := []unroutedDoc{}
	for name, ss := range st.Streams {
		if ss.Pending == 0 {
			continue
		}
		taken := false
		for _, streams := range st.Consumers {
			_, ok := streams[name]
			taken = taken || ok
		}
		if !taken {
			out = append(out, unroutedDoc{Stream: name, Pending: ss.Pending})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stream < out[j].Stream })
	return out
}

func dropsByCause(d store.Drops) map[string]uint64 {
	return map[string]uint64{"quota": d.Quota, "ttl": d.TTL, "rejected": d.Rejected}
}
