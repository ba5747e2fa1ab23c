package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/moongate/moongate/gateway/console"
	"github.com/moongate/moongate/internal/poll"
)

// topicMatch is a test stand-in for mqtt.Match, which this package may not import.
func topicMatch(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) || (f != "+" && f != ts[i]) {
			return false
		}
	}
	return len(fs) == len(ts)
}

type liveServer struct {
	hub *console.Hub
	srv *httptest.Server
	url string // ws://.../live
}

func startHub(t testing.TB, opts console.HubOptions) *liveServer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	hub := console.NewHub(opts)
	srv := httptest.NewServer(hub)
	t.Cleanup(func() {
		hub.Close()
		srv.Close()
	})
	return &liveServer{hub: hub, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/live"}
}

// dial connects and waits until the hub counts the client, so a Publish that follows
// reaches it.
func (s *liveServer) dial(t testing.TB, query string, d *websocket.Dialer, h http.Header) *websocket.Conn {
	t.Helper()
	before := s.hub.Stats().Clients
	if d == nil {
		d = websocket.DefaultDialer
	}
	c, resp, err := d.Dial(s.url+query, h)
	if err != nil {
		t.Fatalf("dial %s: %v (%s)", query, err, body(resp))
	}
	t.Cleanup(func() { c.Close() })
	poll.Eventually(t, "client registered", func() bool { return s.hub.Stats().Clients > before })
	return c
}

func body(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

type wireMsg struct {
	Type     string          `json:"type"`
	TS       int64           `json:"ts"`
	ID       string          `json:"id"`
	Topic    string          `json:"topic"`
	Function string          `json:"function"`
	Payload  json.RawMessage `json:"payload"`
	Msg      string          `json:"msg"`
	Count    int64           `json:"count"`
}

func readMsg(t testing.TB, c *websocket.Conn) wireMsg {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m wireMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// readUntilFence reads until a message with ID or Msg "fence" arrives and returns what
// came before it: a client sees messages in publish order, so this shows exactly which of
// the earlier messages its filter let through.
func readUntilFence(t *testing.T, c *websocket.Conn) []string {
	t.Helper()
	var got []string
	for {
		m := readMsg(t, c)
		if m.ID == "fence" || m.Msg == "fence" {
			return got
		}
		got = append(got, m.Type+":"+m.ID+m.Function)
	}
}

func TestHubFilters(t *testing.T) {
	s := startHub(t, console.HubOptions{Matcher: topicMatch})
	all := s.dial(t, "", nil, nil)
	events := s.dial(t, "?types=event", nil, nil)
	fn := s.dial(t, "?types=invocation,log,sensor&function=alarm", nil, nil)
	topic := s.dial(t, "?types=event,invocation,sensor&topic=sensors/%2B/temp", nil, nil)

	s.hub.Publish(console.Event{ID: "e1", Topic: "sensors/kitchen/temp", Payload: []byte("21")})
	s.hub.Publish(console.Event{ID: "e2", Topic: "alarms/door"})
	s.hub.Publish(console.Invocation{Function: "alarm", Topic: "alarms/door"})
	s.hub.Publish(console.Invocation{Function: "temp", Topic: "sensors/hall/temp"})
	s.hub.Publish(console.Log{Function: "alarm", Msg: "open"})
	s.hub.Publish(console.Log{Function: "temp", Msg: "hot"})
	s.hub.Publish(console.Sync{Sink: "cloud", State: "ok"})
	s.hub.Publish(console.Sensor{Sensor: "kitchen"})
	// One fence that each filter lets through.
	s.hub.Publish(console.Event{ID: "fence", Topic: "sensors/fence/temp"})
	s.hub.Publish(console.Log{Function: "alarm", Msg: "fence"})

	for _, tc := range []struct {
		name string
		c    *websocket.Conn
		want string
	}{
		{"all", all, "event:e1 event:e2 invocation:alarm invocation:temp log:alarm log:temp sync: sensor:"},
		{"types", events, "event:e1 event:e2"},
		{"function", fn, "invocation:alarm log:alarm"},
		{"topic", topic, "event:e1 invocation:temp"},
	} {
		if got := strings.Join(readUntilFence(t, tc.c), " "); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestHubRejectsBadRequests(t *testing.T) {
	s := startHub(t, console.HubOptions{}) // no Matcher
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"?types=event,bogus", http.StatusBadRequest},
		{"?topic=a/%23", http.StatusBadRequest},
	} {
		_, resp, err := websocket.DefaultDialer.Dial(s.url+tc.query, nil)
		if err == nil || resp == nil || resp.StatusCode != tc.want {
			t.Errorf("%s: err %v, response %s; want %d", tc.query, err, body(resp), tc.want)
			continue
		}
		assertJSONError(t, resp)
	}
	resp, err := http.Get(s.srv.URL + "/live")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("plain GET: %s", body(resp))
	}
	assertJSONError(t, resp)
}

func assertJSONError(t *testing.T, resp *http.Response) {
	t.Helper()
	defer resp.Body.Close()
	var e struct{ Error string }
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" {
		t.Errorf("error body is not {\"error\": ...}: %v", err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error content type %q", ct)
	}
}

func TestHubAuth(t *testing.T) {
	s := startHub(t, console.HubOptions{Authorize: func(r *http.Request) bool {
		return console.BearerToken(r) == "s3cret"
	}})
	_, resp, err := websocket.DefaultDialer.Dial(s.url, nil)
	if err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: err %v, response %s", err, body(resp))
	}
	assertJSONError(t, resp)
	_, resp, err = websocket.DefaultDialer.Dial(s.url+"?token=wrong", nil)
	if err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: err %v, response %s", err, body(resp))
	}

	s.dial(t, "", nil, http.Header{"Authorization": {"Bearer s3cret"}})
	s.dial(t, "?token=s3cret", nil, nil)

	// The browser's way: the token rides in a subprotocol; the answer must name only
	// moongate.v1, or Chromium fails the handshake and the token would leak into it.
	d := &websocket.Dialer{Subprotocols: []string{console.Subprotocol, "bearer.s3cret"}}
	c := s.dial(t, "", d, nil)
	if p := c.Subprotocol(); p != console.Subprotocol {
		t.Errorf("selected subprotocol %q, want %q", p, console.Subprotocol)
	}
}

func TestHubOrigin(t *testing.T) {
	s := startHub(t, console.HubOptions{AllowedOrigins: []string{"https://ops.example.com"}})
	host := strings.TrimPrefix(s.srv.URL, "http://")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true}, // not a browser
		{"http://" + host, true},
		{"https://ops.example.com", true},
		{"http://evil.example.com", false},
		{"http://" + host + ".evil.example.com", false},
		{"null", false},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		c, resp, err := websocket.DefaultDialer.Dial(s.url, h)
		if tc.ok && err != nil {
			t.Errorf("origin %q rejected: %v %s", tc.origin, err, body(resp))
		}
		if !tc.ok && (err == nil || resp.StatusCode != http.StatusForbidden) {
			t.Errorf("origin %q: err %v, response %s; want 403", tc.origin, err, body(resp))
		}
		if c != nil {
			c.Close()
		}
	}
}

func TestHubClientCap(t *testing.T) {
	s := startHub(t, console.HubOptions{MaxClients: 2})
	first := s.dial(t, "", nil, nil)
	s.dial(t, "", nil, nil)
	_, resp, err := websocket.DefaultDialer.Dial(s.url, nil)
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third client: err %v, response %s; want 503", err, body(resp))
	}
	assertJSONError(t, resp)

	first.Close()
	poll.Eventually(t, "slot freed", func() bool { return s.hub.Stats().Clients == 1 })
	s.dial(t, "", nil, nil)
}

// smallWindowDialer gives the client a tiny receive buffer so that a client that stops
// reading backs up into the hub's queue after a few kilobytes, not megabytes. widen
// restores a normal buffer for the catch-up; a 4 KiB window would crawl.
func smallWindowDialer() (d *websocket.Dialer, widen func()) {
	var conn *net.TCPConn
	d = &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			conn = c.(*net.TCPConn)
			_ = conn.SetReadBuffer(4 << 10)
		}
		return c, err
	}}
	return d, func() { _ = conn.SetReadBuffer(4 << 20) }
}

func TestHubSkippedMarker(t *testing.T) {
	s := startHub(t, console.HubOptions{ClientBuffer: 8, MaxRate: -1})
	d, widen := smallWindowDialer()
	c := s.dial(t, "", d, nil)

	// The client reads nothing while we publish: Publish must neither block nor lose
	// count. Payloads are large so the kernel buffers fill quickly.
	const n = 5000
	payload := []byte(`"` + strings.Repeat("x", 1000) + `"`)
	for i := range n {
		s.hub.Publish(console.Event{ID: strconv.Itoa(i), Payload: payload})
	}
	skippedTotal := s.hub.Stats().Skipped
	if skippedTotal == 0 {
		t.Fatal("no message was skipped: the test did not stall the client")
	}
	widen()
	start := time.Now()
	defer func() { t.Logf("catch-up took %v", time.Since(start)) }()

	// Every message is accounted for, and each marker sits exactly where its gap is.
	next, markers, reported := 0, 0, 0
	for next < n {
		m := readMsg(t, c)
		switch m.Type {
		case console.TypeSkipped:
			if m.Count <= 0 {
				t.Fatalf("marker with count %d", m.Count)
			}
			markers++
			reported += int(m.Count)
			next += int(m.Count)
		case console.TypeEvent:
			if m.ID != strconv.Itoa(next) {
				t.Fatalf("got event %s, want %d (a marker is missing or misplaced)", m.ID, next)
			}
			next++
		}
	}
	if next != n || uint64(reported) != skippedTotal {
		t.Fatalf("accounted for %d of %d messages; markers report %d skipped, hub counted %d",
			next, n, reported, skippedTotal)
	}
	t.Logf("%d of %d messages skipped, reported in %d markers", skippedTotal, n, markers)
}

func TestHubPingKeepalive(t *testing.T) {
	s := startHub(t, console.HubOptions{PingInterval: 20 * time.Millisecond, PongWait: 200 * time.Millisecond})

	// A client that reads answers pings (gorilla's default ping handler) and stays.
	c := s.dial(t, "", nil, nil)
	pings := make(chan struct{}, 100)
	c.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go func() {
		for {
			if _, _, err := c.NextReader(); err != nil {
				return
			}
		}
	}()
	for range 15 { // 300 ms of pings: longer than PongWait
		select {
		case <-pings:
		case <-time.After(5 * time.Second):
			t.Fatal("no ping from the hub")
		}
	}

	// A client that never reads never pongs, and is dropped after PongWait.
	s.dial(t, "", nil, nil)
	poll.Eventually(t, "silent client dropped", func() bool { return s.hub.Stats().Clients == 1 })
}

func TestHubCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	hub := console.NewHub(console.HubOptions{Logger: slog.New(slog.DiscardHandler), ClientBuffer: 4, MaxRate: -1})
	srv := httptest.NewServer(hub)
	s := &liveServer{hub: hub, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
	reading := s.dial(t, "", nil, nil)
	d, _ := smallWindowDialer()
	stalled := s.dial(t, "", d, nil)
	payload := []byte(`"` + strings.Repeat("x", 4000) + `"`)
	for range 2000 {
		hub.Publish(console.Event{Payload: payload})
	}

	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := reading.ReadMessage(); err != nil {
				closed <- err
				return
			}
		}
	}()
	hub.Close()
	if err := <-closed; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("reading client got %v, want a going-away close", err)
	}
	if hub.Stats().Clients != 0 {
		t.Errorf("%d clients after Close", hub.Stats().Clients)
	}
	if _, resp, err := websocket.DefaultDialer.Dial(s.url, nil); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after Close: err %v, response %s; want 503", err, body(resp))
	}
	reading.Close()
	stalled.Close()
	srv.Close()
	poll.Eventually(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// Past MaxRate a second, a client's messages are skipped without being encoded for it, in
// whole runs with a marker each, and every message stays accounted for.
func TestHubRateCap(t *testing.T) {
	s := startHub(t, console.HubOptions{MaxRate: 100})
	c := s.dial(t, "", nil, nil)
	const n = 1000
	for i := range n {
		s.hub.Publish(console.Event{ID: strconv.Itoa(i), Payload: []byte("1")})
	}
	// Within a second or two every message is either delivered or in a marker.
	received, reported, markers, next := 0, 0, 0, 0
	for next < n {
		m := readMsg(t, c)
		switch m.Type {
		case console.TypeSkipped:
			markers++
			reported += int(m.Count)
			next += int(m.Count)
		case console.TypeEvent:
			if m.ID != strconv.Itoa(next) {
				t.Fatalf("got event %s, want %d", m.ID, next)
			}
			received++
			next++
		}
	}
	// The burst may straddle a second boundary: at most two seconds' worth got through.
	if received < 100 || received > 200 || markers > 3 || uint64(reported) != s.hub.Stats().Skipped {
		t.Errorf("%d received, %d skipped in %d markers (hub counted %d); want 100-200 received in runs",
			received, reported, markers, s.hub.Stats().Skipped)
	}

	// A negative MaxRate means no cap.
	s = startHub(t, console.HubOptions{MaxRate: -1, ClientBuffer: n})
	c = s.dial(t, "", nil, nil)
	for i := range n {
		s.hub.Publish(console.Event{ID: strconv.Itoa(i)})
	}
	for i := range n {
		if m := readMsg(t, c); m.Type != console.TypeEvent || m.ID != strconv.Itoa(i) {
			t.Fatalf("uncapped: message %d is %+v", i, m)
		}
	}
}
