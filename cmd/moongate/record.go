package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/gorilla/websocket"

	"github.com/moongate/moongate/gateway/fntest"
)

// recordWindow is how many events record keeps while it waits for the invocations they
// start: an event comes on the live stream before the runs it starts.
const recordWindow = 10000

// recordCmd saves the events that reach a gateway's functions, from the live websocket,
// as JSON lines (fntest.Record): one line per event and function it ran, in the order the
// runs ended.
func recordCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("record", stderr)
	a := clientFlags(fs)
	function := fs.String("f", "", "only the events that reached this function")
	duration := fs.Duration("duration", 0, "stop after this long (default: until interrupted)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	u, err := url.Parse(strings.TrimRight(a.base, "/") + "/api/v1/live")
	if err != nil {
		return usagef("--api: %v", err)
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	// No ?function=: events carry none, so the stream would filter them all out; the
	// invocations say which function each event reached.
	u.RawQuery = url.Values{"types": {"event,invocation"}}.Encode()
	hdr := http.Header{}
	if a.token != "" {
		hdr.Set("Authorization", "Bearer "+a.token)
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	conn, resp, err := websocket.DefaultDialer.DialContext(ctx, u.String(), hdr)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("connect %s: %s", u, resp.Status)
		}
		return fmt.Errorf("connect %s: %w", u, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	fmt.Fprintf(stderr, "recording the events that reach %s on %s (Ctrl-C stops)\n", cmp.Or(*function, "the functions"), a.base)

	rec := newRecorder(*function, stdout, stderr)
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			rec.done()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("stream: %w", err)
		}
		if err := rec.message(data); err != nil {
			return err
		}
	}
}

// recorder pairs live events with the invocations they started.
type recorder struct {
	function string
	out      *bufio.Writer
	stderr   io.Writer
	events   map[string]*liveEvent
	order    []string // the ids in events, oldest first
	written  int
	skipped  int // truncated payloads, not recorded
}

type liveEvent struct {
	rec       fntest.RecordEvent
	truncated bool
	ran       map[string]bool // the functions it was recorded for
}

func newRecorder(function string, stdout, stderr io.Writer) *recorder {
	return &recorder{function: function, out: bufio.NewWriter(stdout), stderr: stderr,
		events: map[string]*liveEvent{}}
}

func (r *recorder) message(data []byte) error {
	var m struct {
		Type      string             `json:"type"`
		TS        int64              `json:"ts"`
		ID        string             `json:"id"`
		Source    string             `json:"source"`
		Topic     string             `json:"topic"`
		Payload   json.RawMessage    `json:"payload"`
		Truncated bool               `json:"truncated"`
		QoS       byte               `json:"qos"`
		Pin       string             `json:"pin"`
		Level     int                `json:"level"`
		Edge      string             `json:"edge"`
		Sensor    string             `json:"sensor"`
		Values    map[string]float64 `json:"values"`
		Function  string             `json:"function"`
		EventID   string             `json:"event_id"`
		Count     int                `json:"count"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("live message: %w", err)
	}
	switch m.Type {
	case "event":
		if m.Source == "gpio" || m.Source == "timer" || m.Source == "sensor" {
			m.Topic = strings.TrimPrefix(strings.TrimPrefix(m.Topic, "gpio/"), "sensor/")
			if m.Source != "timer" {
				m.Topic = ""
			}
		}
		if string(m.Payload) == "null" {
			m.Payload = nil
		}
		r.events[m.ID] = &liveEvent{truncated: m.Truncated, ran: map[string]bool{},
			rec: fntest.RecordEvent{ID: m.ID, Source: m.Source, TS: m.TS, Topic: m.Topic, Payload: m.Payload, QoS: m.QoS,
				Pin: m.Pin, Level: m.Level, Edge: m.Edge, Sensor: m.Sensor, Values: m.Values}}
		r.order = append(r.order, m.ID)
		if len(r.order) > recordWindow {
			delete(r.events, r.order[0])
			r.order = r.order[1:]
		}
	case "invocation":
		ev := r.events[m.EventID]
		if ev == nil || (r.function != "" && m.Function != r.function) || ev.ran[m.Function] {
			return nil // an event from before the recording, another function's, or a retry
		}
		ev.ran[m.Function] = true
		if ev.truncated {
			r.skipped++
			return nil
		}
		line, err := json.Marshal(fntest.Record{TS: ev.rec.TS, Function: m.Function, Event: ev.rec})
		if err != nil {
			return err
		}
		r.out.Write(append(line, '\n'))
		r.written++
		return r.out.Flush() // a recording cut short by Ctrl-C keeps every line
	case "skipped":
		fmt.Fprintf(r.stderr, "moongate record: the gateway skipped %s to this recorder (too many a second): the recording has gaps\n",
			count(m.Count, "message"))
	}
	return nil
}

func (r *recorder) done() {
	r.out.Flush()
	msg := "recorded " + count(r.written, "event")
	if r.skipped > 0 {
		msg += fmt.Sprintf("; %d left out: their payloads were over the live stream's limit", r.skipped)
	}
	fmt.Fprintln(r.stderr, msg)
}

// readRecords reads a recording (JSON lines of fntest.Record); function, when set, keeps
// only its lines.
func readRecords(path, function string) ([]fntest.Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("%v", err)
	}
	defer f.Close()
	var out []fntest.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r fntest.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, usagef("%s:%d: %v", path, n, err)
		}
		if r.Function == "" {
			return nil, usagef("%s:%d: no function", path, n)
		}
		if function == "" || r.Function == function {
			out = append(out, r)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// parseSpeed reads --speed: "max" (no waits, 0), or a factor like 10x, 0.5x or 2.
func parseSpeed(s string) (float64, error) {
	if s == "max" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "x"), 64)
	if err != nil || f <= 0 {
		return 0, errors.New("want max or a factor such as 1x, 10x, 0.5x")
	}
	return f, nil
}
