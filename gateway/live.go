package gateway

import (
	"log/slog"
	"time"

	"github.com/moongate/moongate/firmware"
	"github.com/moongate/moongate/gateway/console"
	"github.com/moongate/moongate/luafn"
	"github.com/moongate/moongate/sensors"
)

// live feeds the console's websocket stream. Every method is on a hot path, so each
// returns at once when no console is watching; sensor readings and sink transitions,
// which come at poll rates, are kept in recent first for consoles that open later.
type live struct {
	hub    *console.Hub
	clock  Clock
	recent history
}

func (l *live) watching() bool { return l != nil && l.hub.Stats().Clients > 0 }

func (l *live) event(ev *luafn.Event) {
	if !l.watching() {
		return
	}
	l.hub.Publish(console.Event{TS: ev.TS, ID: ev.ID, Source: ev.Source, Topic: eventTopic(ev), Payload: ev.Payload, QoS: ev.QoS,
		Pin: ev.Pin, Level: ev.Level, Edge: ev.Edge, Sensor: ev.Sensor, Values: ev.Values})
}

// eventTopic names non-MQTT events in the console's topic column.
func eventTopic(ev *luafn.Event) string {
	switch {
	case ev.Topic != "":
		return ev.Topic
	case ev.Pin != "":
		return "gpio/" + ev.Pin
	case ev.Sensor != "":
		return "sensor/" + ev.Sensor
	}
	return ""
}

func (l *live) invocation(v *version, ev *luafn.Event, res *luafn.Result, d time.Duration, err error) {
	if !l.watching() {
		return
	}
	m := console.Invocation{TS: l.clock.Now().UnixMilli(), Function: v.name, Version: v.number, EventID: ev.ID,
		Topic: eventTopic(ev), DurationUS: d.Microseconds()}
	if err != nil {
		m.Error = err.Error()
	}
	if res != nil {
		m.Result = res.Value
	}
	l.hub.Publish(m)
}

// log publishes one log line of a function as it is made, or a report of dropped lines.
func (l *live) log(r luafn.LogRecord) {
	if !l.watching() {
		return
	}
	l.hub.Publish(console.Log{TS: r.Time.UnixMilli(), Function: r.Function, Version: r.Version, Level: levelName(r.Level),
		Msg: r.Message, EventID: r.EventID, File: r.File, Line: r.Line, Dropped: r.Dropped})
}

func (l *live) sensor(rd sensors.Reading) {
	if l == nil {
		return
	}
	m := console.Sensor{TS: rd.TS.UnixMilli(), Sensor: rd.Sensor, Values: rd.Values}
	l.recent.sensor(m)
	if l.watching() {
		l.hub.Publish(m)
	}
}

func (l *live) sync(name, state, errMsg string, lag time.Duration, pending int64) {
	if l == nil {
		return
	}
	m := console.Sync{TS: l.clock.Now().UnixMilli(), Sink: name, State: state, Error: errMsg, LagMS: lag.Milliseconds(), Pending: pending}
	l.recent.sync(m)
	if l.watching() {
		l.hub.Publish(m)
	}
}

// firmware says a device's firmware state: the console's firmware page follows its
// rollout from these.
func (l *live) firmware(device string, st firmware.State, rollout string) {
	if l.watching() {
		l.hub.Publish(console.Firmware{TS: l.clock.Now().UnixMilli(), Device: device, Version: st.Version, Status: st.Status,
			Error: st.Error, Rollout: rollout})
	}
}

func levelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warn"
	case l >= slog.LevelInfo:
		return "info"
	}
	return "debug"
}
