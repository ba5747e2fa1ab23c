package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moongate/moongate/gateway"
)

// The quickstart's cloud path end to end, as `make run` sets it up: the quickstart config
// (moved to free loopback ports), the receiver as its sink. A hot reading's alert reaches
// the receiver, which prints it, and nothing is left unrouted in the outbox.
func TestQuickstartReachesReceiver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, ln, &out) }()

	cfg, err := gateway.Load(filepath.Join("..", "quickstart", "moongate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sync.Sinks) != 1 || cfg.Sync.Sinks[0].HTTP.URL != "http://127.0.0.1:8090/ingest" {
		t.Fatalf("the quickstart's sink is not the receiver's default address: %+v", cfg.Sync.Sinks)
	}
	cfg.Sync.Sinks[0].HTTP.URL = "http://" + ln.Addr().String() + "/ingest"
	cfg.Gateway.DataDir = t.TempDir()
	cfg.Gateway.Console.Listen = "127.0.0.1:0"
	cfg.MQTT.Embedded.Listen = "127.0.0.1:0"
	g := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.DiscardHandler)})
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("receiver: %v", err)
		}
	}()
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("gateway stopped at start: %v", err)
	}
	api := "http://" + g.HTTPAddr() + "/api/v1/"

	resp, err := http.Post(api+"functions/temp-alert/invoke", "application/json",
		strings.NewReader(`{"topic": "sensors/laptop/temp", "payload": {"temp": 41}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), `"device":"laptop"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the alert did not reach the receiver; it printed:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "stream=alerts") || !strings.Contains(out.String(), "function=temp-alert") {
		t.Errorf("receiver printed:\n%s", out.String())
	}
	var syncDoc struct {
		Unrouted []any `json:"unrouted"`
	}
	resp, err = http.Get(api + "sync")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&syncDoc); err != nil || syncDoc.Unrouted == nil || len(syncDoc.Unrouted) != 0 {
		t.Errorf("unrouted %v (%v), want none", syncDoc.Unrouted, err)
	}
}

// A batch that is not JSON is refused with 400, so the sink isolates it instead of the
// receiver printing garbage.
func TestReceiverRefusesGarbage(t *testing.T) {
	var out lockedBuffer
	srv := &http.Server{Handler: handler(&out)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	resp, err := http.Post("http://"+ln.Addr().String()+"/ingest", "application/json", strings.NewReader("nope"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || out.String() != "" {
		t.Errorf("status %d, printed %q", resp.StatusCode, out.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
