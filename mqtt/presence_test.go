package mqtt

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/mosquittotest"
)

var testPresence = &Presence{Topic: "gw/test/status", Online: []byte("online"), Offline: []byte("offline")}

// watchPresence subscribes a device to the presence topic and returns what it receives,
// with the retained flag.
func watchPresence(t *testing.T, broker string) <-chan string {
	t.Helper()
	got := make(chan string, 16)
	dev := device(t, broker, nil)
	wait(t, dev.Subscribe(testPresence.Topic, 1, func(_ paho.Client, m paho.Message) {
		s := string(m.Payload())
		if m.Retained() {
			s += " (retained)"
		}
		got <- s
	}))
	return got
}

// expectOnline waits until the client's online is on the broker: the client publishes it
// once connected, which may come after a watcher subscribed (then not as retained).
func expectOnline(t *testing.T, broker string) {
	t.Helper()
	got := watchPresence(t, broker)
	for {
		select {
		case s := <-got:
			if strings.HasPrefix(s, "online") {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("presence: online never came")
		}
	}
}

func expectPresence(t *testing.T, got <-chan string, want string) {
	t.Helper()
	select {
	case s := <-got:
		if s != want {
			t.Fatalf("presence: got %q, want %q", s, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("presence: nothing arrived, want %q", want)
	}
}

// The embedded broker says online (retained) from the moment devices can connect, and
// offline to those still connected when it closes.
func TestEmbeddedPresence(t *testing.T) {
	e, err := NewEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", Presence: testPresence})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if err := e.Start(context.Background(), nil, newRecorder()); err != nil {
		t.Fatal(err)
	}
	got := watchPresence(t, "tcp://"+e.Addr())
	expectPresence(t, got, "online (retained)")
	e.Close()
	expectPresence(t, got, "offline")
}

// On an external broker: online on connecting, offline (retained) on a clean Close, and,
// when the publishing connection vanishes without a DISCONNECT, the broker publishes the
// will; the gateway says online again once it is back.
func TestClientPresence(t *testing.T) {
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	opts := clientOpts(m.URL, "gw-presence")
	opts.Presence = testPresence
	c := startClient(t, opts, nil, newRecorder())
	connected(t, c)
	expectOnline(t, m.URL)
	got := watchPresence(t, m.URL)
	expectPresence(t, got, "online (retained)")
	c.Close()
	expectPresence(t, got, "offline")
	if late := watchPresence(t, m.URL); true {
		expectPresence(t, late, "offline (retained)")
	}

	// The embedded broker stands in for the external one here: it can cut a connection.
	e := startEmbedded(t, EmbeddedOptions{}, nil, newRecorder())
	url := "tcp://" + e.Addr()
	opts = clientOpts(url, "gw-will")
	opts.Presence = testPresence
	c = startClient(t, opts, nil, newRecorder())
	expectOnline(t, url)
	got = watchPresence(t, url)
	expectPresence(t, got, "online (retained)")
	if err := e.DisconnectDevice("gw-will-pub"); err != nil {
		t.Fatal(err)
	}
	// The will, and online from the new connection. mochi sends the will from the cut
	// connection's goroutine, which on a busy machine may come after the reconnection's
	// online (CI saw it once); Mosquitto, single-threaded, sends it first.
	var pair []string
	for range 2 {
		select {
		case s := <-got:
			pair = append(pair, s)
		case <-time.After(10 * time.Second):
			t.Fatalf("presence after the cut: got %q, want offline and online", pair)
		}
	}
	if slices.Sort(pair); !slices.Equal(pair, []string{"offline", "online"}) {
		t.Fatalf("presence after the cut: got %q, want offline and online", pair)
	}
}
