package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/moongate/moongate/gateway/console"
	"github.com/moongate/moongate/luafn"
)

// invokeRequest is a test event; every field is optional.
type invokeRequest struct {
	ID      string             `json:"id"`
	Source  string             `json:"source"`
	TS      int64              `json:"ts"`
	Topic   string             `json:"topic"`
	Payload json.RawMessage    `json:"payload"`
	QoS     byte               `json:"qos"`
	Pin     string             `json:"pin"`
	Level   int                `json:"level"`
	Edge    string             `json:"edge"`
	Sensor  string             `json:"sensor"`
	Values  map[string]float64 `json:"values"`
}

type invokeResponse struct {
	Result     any               `json:"result"`
	Logs       []console.LogLine `json:"logs"`
	Error      string            `json:"error,omitempty"`
	Line       int               `json:"line,omitempty"`
	DurationUS int64             `json:"duration_us"`
	Version    int               `json:"version"`
	EventID    string            `json:"event_id"`
	// DryRun is set for ?dry_run=1: Would then lists what the invocation asked for, and
	// none of it happened. Otherwise Effects lists what it did (empty lists if it failed).
	DryRun  bool        `json:"dry_run,omitempty"`
	Would   *effectsDoc `json:"would,omitempty"`
	Effects *effectsDoc `json:"effects,omitempty"`
}

// invokeFunction runs the function once on a test event, for real: its effects commit like
// any other invocation's, so what the console shows is what the function does, and the
// answer lists them. With ?dry_run=1 it runs the same, but applies nothing: no KV write,
// no outbox record, no publish, no GPIO write; the answer lists what it would have done.
func (a *api) invokeFunction(w http.ResponseWriter, r *http.Request) {
	v := a.registry.current(r.PathValue("name"))
	if v == nil {
		writeError(w, http.StatusNotFound, "no function "+strconv.Quote(r.PathValue("name")))
		return
	}
	var req invokeRequest
	if !decodeBody(w, r, &req) {
		return
	}
	ev := &luafn.Event{ID: req.ID, Source: req.Source, TS: req.TS, Topic: req.Topic, QoS: req.QoS,
		Pin: req.Pin, Level: req.Level, Edge: req.Edge, Sensor: req.Sensor, Values: req.Values}
	if ev.ID == "" {
		ev.ID = newEventID()
	}
	if ev.Source == "" {
		ev.Source = "console"
	}
	if ev.TS == 0 {
		ev.TS = a.clock.Now().UnixMilli()
	}
	if len(req.Payload) > 0 {
		var s string
		if json.Unmarshal(req.Payload, &s) == nil {
			ev.Payload = []byte(s) // a JSON string is the payload's text
		} else {
			ev.Payload = req.Payload
		}
	}
	dryRun := r.URL.Query().Get("dry_run")
	dry := dryRun == "1" || dryRun == "true"
	var effects *effectsDoc
	res, err := a.proc.invoke(a.proc.ctx, v, ev)
	if err == nil {
		effects, err = a.describeEffects(v, ev, res)
	}
	if err == nil && !dry {
		// A test invocation is not held while the store refuses it: its caller is waiting.
		if c := commitOf(v, res, a.clock.Now()); !emptyCommit(c) {
			if err = a.store.Commit(r.Context(), c); err != nil {
				a.metrics.commitErrors.Inc()
				err = fmt.Errorf("commit: %w", err)
			}
		}
		if err == nil {
			a.proc.afterCommit(v, &task{ev: ev}, res) // a test event starts a chain
		}
	}
	if err != nil { // a failed invocation has no effects, nor has a refused commit
		effects = noEffects()
	}
	out := invokeResponse{Logs: []console.LogLine{}, Version: v.number, EventID: ev.ID, DryRun: dry}
	if dry {
		out.Would = effects
	} else {
		out.Effects = effects
	}
	if res != nil {
		out.Result = res.Value
		out.DurationUS = res.Duration.Microseconds()
		for _, l := range res.Logs {
			out.Logs = append(out.Logs, console.LogLine{Level: levelName(l.Level), Msg: l.Message})
		}
	}
	if err != nil {
		out.Error = err.Error()
		var ie *luafn.InvokeError
		if errors.As(err, &ie) {
			out.Line = ie.Line
		}
	}
	writeJSON(w, http.StatusOK, out)
}
