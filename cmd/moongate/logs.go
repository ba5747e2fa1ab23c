package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// logsCmd streams invocations and logs from the live websocket. With -f it keeps going and
// reconnects when the gateway restarts; without, it prints what arrives for a moment.
func logsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("logs", stderr)
	a := clientFlags(fs)
	follow := fs.Bool("f", false, "follow: keep streaming, reconnect when the connection drops")
	types := fs.String("types", "invocation,log", "message types: event,invocation,log,sync,sensor")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("usage: moongate logs [-f] [NAME]")
	}
	u, err := url.Parse(strings.TrimRight(a.base, "/") + "/api/v1/live")
	if err != nil {
		return usagef("--api: %v", err)
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	q := url.Values{"types": {*types}}
	if len(pos) == 1 {
		q.Set("function", pos[0])
	}
	u.RawQuery = q.Encode()
	hdr := http.Header{}
	if a.token != "" {
		hdr.Set("Authorization", "Bearer "+a.token)
	}
	if !*follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
	}
	backoff := 250 * time.Millisecond
	for {
		err := streamOnce(ctx, u.String(), hdr, stdout)
		if ctx.Err() != nil {
			return nil
		}
		if !*follow {
			return err
		}
		fmt.Fprintf(stderr, "moongate logs: %v; reconnecting in %s\n", err, backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func streamOnce(ctx context.Context, url string, hdr http.Header, out io.Writer) error {
	conn, resp, err := websocket.DefaultDialer.DialContext(ctx, url, hdr)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("connect %s: %s", url, resp.Status)
		}
		return fmt.Errorf("connect %s: %w", url, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("stream: %w", err)
		}
		printLive(out, data)
	}
}

// printLive renders one live message as a line.
func printLive(w io.Writer, data []byte) {
	var m struct {
		Type       string          `json:"type"`
		TS         int64           `json:"ts"`
		Function   string          `json:"function"`
		Version    int             `json:"version"`
		DurationUS int64           `json:"duration_us"`
		Result     json.RawMessage `json:"result"`
		Error      string          `json:"error"`
		Level      string          `json:"level"`
		Msg        string          `json:"msg"`
		File       string          `json:"file"`
		Line       int             `json:"line"`
		Topic      string          `json:"topic"`
		Payload    json.RawMessage `json:"payload"`
		Sink       string          `json:"sink"`
		State      string          `json:"state"`
		Sensor     string          `json:"sensor"`
		Values     json.RawMessage `json:"values"`
		Count      int             `json:"count"`
	}
	if json.Unmarshal(data, &m) != nil {
		fmt.Fprintf(w, "%s\n", data)
		return
	}
	ts := time.UnixMilli(m.TS).Format("15:04:05.000")
	switch m.Type {
	case "invocation":
		outcome := "ok " + string(m.Result)
		if m.Error != "" {
			outcome = "ERROR " + m.Error
		}
		fmt.Fprintf(w, "%s %s v%d %s %s\n", ts, m.Function, m.Version, micros(m.DurationUS), outcome)
	case "log":
		at := ""
		if m.File != "" {
			at = fmt.Sprintf(" %s:%d", m.File, m.Line)
		}
		fmt.Fprintf(w, "%s %s v%d %-5s%s %s\n", ts, m.Function, m.Version, strings.ToUpper(m.Level), at, m.Msg)
	case "event":
		fmt.Fprintf(w, "%s event %s %s\n", ts, m.Topic, m.Payload)
	case "sync":
		fmt.Fprintf(w, "%s sink %s %s %s\n", ts, m.Sink, m.State, m.Error)
	case "sensor":
		fmt.Fprintf(w, "%s sensor %s %s\n", ts, m.Sensor, m.Values)
	case "skipped":
		fmt.Fprintf(w, "%s ... %s skipped (reading too slowly)\n", ts, count(m.Count, "message"))
	default:
		fmt.Fprintf(w, "%s %s\n", ts, data)
	}
}
