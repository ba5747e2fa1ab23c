package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/moongate/moongate/internal/poll"
)

// readLive connects to the live stream with query q and returns its messages.
func readLive(t *testing.T, tg *testGateway, q string) <-chan map[string]any {
	t.Helper()
	url := strings.Replace(tg.api, "http://", "ws://", 1) + "/api/v1/live?" + q
	before := tg.g.hub.Stats().Clients
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	out := make(chan map[string]any, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(out)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal(data, &m) == nil {
				out <- m
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	poll.Eventually(t, "the live client to be connected", func() bool { return tg.g.hub.Stats().Clients > before })
	return out
}

// next returns the next message, failing the test after a generous wait.
func next(t *testing.T, ch <-chan map[string]any) map[string]any {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("live stream closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no live message within 10s")
	}
	return nil
}

// Every log line of a function is a live message of its own, with the function, version,
// event, level and Lua position, sent before the invocation that made it ends; its
// arguments are joined as print joins them. A function that logs in a loop costs at most
// the per-invocation cap, and the rest is reported as one "N log lines dropped" line and
// counted in /metrics.
func TestFunctionLogsAreLiveMessages(t *testing.T) {
	dir := t.TempDir()
	tg := startYAML(t, dir, baseConfig(dir, ""))
	deploy := func(name, source string) {
		t.Helper()
		if r := call(t, "PUT", tg.api+"/api/v1/functions/"+name, "", map[string]any{"source": source}); r.status != http.StatusCreated {
			t.Fatalf("deploy %s: %d %s", name, r.status, r.raw)
		}
	}
	deploy("chatty", "function handle(event)\n  log.info(\"alert:\", \"dev-1\", 31.5)\n  print(\"second\")\n  return 1\nend\n")
	deploy("loud", "function handle(event)\n  for i = 1, 300 do\n    log.debug(\"line\", i)\n  end\nend\n")

	live := readLive(t, tg, "types=log,invocation&function=chatty")
	r := call(t, "POST", tg.api+"/api/v1/functions/chatty/invoke", "", map[string]any{})
	if r.status != http.StatusOK {
		t.Fatalf("invoke: %d %s", r.status, r.raw)
	}
	eventID := r.body["event_id"]
	want := []map[string]any{
		{"type": "log", "function": "chatty", "version": 1.0, "level": "info", "msg": "alert:\tdev-1\t31.5",
			"event_id": eventID, "file": "chatty.lua", "line": 2.0},
		{"type": "log", "function": "chatty", "version": 1.0, "level": "info", "msg": "second",
			"event_id": eventID, "file": "chatty.lua", "line": 3.0},
	}
	for i, w := range want {
		m := next(t, live)
		delete(m, "ts")
		if fmt.Sprint(m) != fmt.Sprint(w) {
			t.Errorf("message %d\n got %v\nwant %v", i, m, w)
		}
	}
	if m := next(t, live); m["type"] != "invocation" || m["event_id"] != eventID {
		t.Errorf("after the logs: %v, want the invocation", m)
	}

	live = readLive(t, tg, "types=log&function=loud")
	if r := call(t, "POST", tg.api+"/api/v1/functions/loud/invoke", "", map[string]any{}); r.status != http.StatusOK {
		t.Fatalf("invoke loud: %d %s", r.status, r.raw)
	}
	lines := 0
	var report map[string]any
	for report == nil {
		m := next(t, live)
		if m["dropped"] != nil {
			report = m
		} else {
			lines++
		}
	}
	if lines != 100 || report["dropped"] != 200.0 || report["level"] != "warn" ||
		report["msg"] != "200 log lines dropped (over 100 per invocation or 100 a second)" {
		t.Errorf("%d lines, then report %v", lines, report)
	}
	resp, err := http.Get(tg.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `moongate_log_lines_dropped_total{function="loud"} 200`) {
		t.Errorf("metrics lack the dropped lines:\n%s", grepLines(string(body), "log_lines"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
