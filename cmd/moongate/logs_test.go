package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/loopback"
)

// `moongate logs -f NAME` prints the function's log lines as they are made, with level,
// version and Lua position, and its invocations with durations people read.
func TestLogsFollowPrintsFunctionLogLines(t *testing.T) {
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	dir, cfg := writeQuickstart(t, "embedded", mqttPort, apiPort)
	g := startGateway(t, dir, cfg, apiPort)
	defer g.stop(t)

	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	var follow sync.WaitGroup
	follow.Go(func() {
		Main(ctx, []string{"logs", "-f", "--api", g.api, "temp-alert"}, out, &bytes.Buffer{})
	})
	defer func() {
		cancel()
		follow.Wait()
	}()
	// Invoke until the stream shows it: logs -f may connect after the first invocation.
	want := "temp-alert v1 INFO  functions/temp_alert.lua:33 alert: dev-9 at 31.5"
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("logs -f printed:\n%s\nwant a line with %q", out.String(), want)
		}
		body := strings.NewReader(`{"topic": "sensors/dev-9/temp", "payload": {"temp": 31.5}}`)
		resp, err := http.Post(g.api+"/api/v1/functions/temp-alert/invoke", "application/json", body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		time.Sleep(200 * time.Millisecond)
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, " v1 ") && strings.Contains(l, "µs") && !strings.Contains(l, " µs ") {
			t.Errorf("invocation line without a readable duration: %q", l)
		}
	}
}

func TestReadableFigures(t *testing.T) {
	for us, want := range map[int64]string{0: "0 µs", 812: "812 µs", 4250: "4.25 ms", 66752: "66.8 ms", 1_250_000: "1.25 s"} {
		if got := micros(us); got != want {
			t.Errorf("micros(%d) = %q, want %q", us, got, want)
		}
	}
	for n, want := range map[int]string{0: "0 functions", 1: "1 function", 2: "2 functions"} {
		if got := count(n, "function"); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
	var b bytes.Buffer
	printLive(&b, []byte(`{"type":"log","ts":0,"function":"f","version":2,"level":"warn","msg":"a\tb","file":"f.lua","line":7}`))
	printLive(&b, []byte(`{"type":"invocation","ts":0,"function":"f","version":2,"duration_us":66752,"result":1,"error":""}`))
	printLive(&b, []byte(`{"type":"skipped","ts":0,"count":1}`))
	ts := time.UnixMilli(0).Format("15:04:05.000")
	want := fmt.Sprintf("%[1]s f v2 WARN  f.lua:7 a\tb\n%[1]s f v2 66.8 ms ok 1\n%[1]s ... 1 message skipped (reading too slowly)\n", ts)
	if b.String() != want {
		t.Errorf("printed\n%s\nwant\n%s", b.String(), want)
	}
}
