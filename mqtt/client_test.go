package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/mosquittotest"
	"github.com/moongate/moongate/internal/poll"
)

// clientOpts are options for tests: quick reconnects, and Close hands back at once.
func clientOpts(broker, id string) ClientOptions {
	return ClientOptions{
		Broker:               broker,
		ClientID:             id,
		ConnectTimeout:       5 * time.Second,
		MaxReconnectInterval: 200 * time.Millisecond,
		DrainTimeout:         -1,
	}
}

func startClient(t testing.TB, opts ClientOptions, subs []Subscription, h Handler) *Client {
	t.Helper()
	c, err := NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Start(context.Background(), subs, h); err != nil {
		t.Fatal(err)
	}
	return c
}

func connected(t testing.TB, c *Client) {
	t.Helper()
	poll.Eventually(t, "connected", func() bool { return c.Status().State == StateConnected })
}

// (a) a round trip through a real Mosquitto, both ways, with manual acks.
func TestClientRoundTrip(t *testing.T) {
	t.Parallel()
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	rec := newRecorder()
	c := startClient(t, clientOpts(m.URL, "gw-a"), []Subscription{{"sensors/+/temp", 1}}, rec)
	connected(t, c)
	dev := device(t, m.URL, nil)
	down := make(chan paho.Message, 1)
	wait(t, dev.Subscribe("alerts/#", 1, func(_ paho.Client, m paho.Message) { down <- m }))

	wait(t, dev.Publish("sensors/d1/temp", 1, false, "31"))
	msg := rec.next(t)
	if msg.Topic != "sensors/d1/temp" || string(msg.Payload) != "31" || msg.QoS != 1 {
		t.Fatalf("got %+v", msg)
	}
	if st := c.Status(); st.Pending != 1 {
		t.Fatalf("status before Ack: %+v", st)
	}
	msg.Ack()
	if err := c.Publish(context.Background(), "alerts/d1", []byte("hot"), 1, false); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-down:
		if string(got.Payload()) != "hot" {
			t.Fatalf("device got %q", got.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the device got nothing")
	}
	st := c.Status()
	if st.Received != 1 || st.Acked != 1 || st.Pending != 0 || st.Published != 1 || st.Broker != m.URL {
		t.Fatalf("status: %+v", st)
	}
	// Later subscriptions, and unsubscribing.
	if err := c.Subscribe(Subscription{"late/#", 0}); err != nil {
		t.Fatal(err)
	}
	wait(t, dev.Publish("late/1", 0, false, "x"))
	if got := rec.next(t); got.Topic != "late/1" || got.QoS != 0 {
		t.Fatalf("got %+v", got)
	}
	if err := c.Unsubscribe("late/#"); err != nil {
		t.Fatal(err)
	}
	wait(t, dev.Publish("late/2", 0, false, "x"))
	rec.none(t, 200*time.Millisecond)
}

// (b) QoS 1 messages published while the gateway is away arrive, in order, when it
// comes back with the same client id: the persistent session kept them.
func TestClientPersistentSession(t *testing.T) {
	t.Parallel()
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	rec := newRecorder()
	c := startClient(t, clientOpts(m.URL, "gw-b"), []Subscription{{"q/#", 1}}, rec)
	connected(t, c)
	c.Close()

	dev := device(t, m.URL, nil)
	const n = 50
	for i := range n {
		wait(t, dev.Publish(fmt.Sprintf("q/%d", i), 1, false, fmt.Sprint(i)))
	}
	rec.none(t, 100*time.Millisecond)

	rec2 := newRecorder()
	c2 := startClient(t, clientOpts(m.URL, "gw-b"), []Subscription{{"q/#", 1}}, rec2)
	for i := range n {
		got := rec2.next(t)
		if got.Topic != fmt.Sprintf("q/%d", i) {
			t.Fatalf("message %d is %s: out of order", i, got.Topic)
		}
		got.Ack()
	}
	poll.Eventually(t, "all acked", func() bool { return c2.Status().Acked == n })
}

// (c) a message handed to the handler but never acknowledged (the process dies before
// its commit) comes again on the next connection; an acknowledged one does not.
func TestClientUnackedRedelivered(t *testing.T) {
	t.Parallel()
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	subs := []Subscription{{"r/#", 1}}
	rec := newRecorder()
	c := startClient(t, clientOpts(m.URL, "gw-c"), subs, rec)
	connected(t, c)
	dev := device(t, m.URL, nil)
	wait(t, dev.Publish("r/1", 1, false, "must not be lost"))
	if got := rec.next(t); string(got.Payload) != "must not be lost" {
		t.Fatalf("got %+v", got)
	}
	c.Close() // no Ack

	rec2 := newRecorder()
	c2 := startClient(t, clientOpts(m.URL, "gw-c"), subs, rec2)
	got := rec2.next(t)
	if string(got.Payload) != "must not be lost" {
		t.Fatalf("redelivered %+v", got)
	}
	got.Ack()
	poll.Eventually(t, "acked", func() bool { return c2.Status().Acked == 1 })
	c2.Close()

	rec3 := newRecorder()
	startClient(t, clientOpts(m.URL, "gw-c"), subs, rec3)
	rec3.none(t, 500*time.Millisecond)
}

// (d) the broker restarts and forgets everything: the client reconnects by itself,
// subscribes again, and messages published after the restart arrive.
func TestClientBrokerRestart(t *testing.T) {
	t.Parallel()
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	rec := newRecorder()
	c := startClient(t, clientOpts(m.URL, "gw-d"), []Subscription{{"s/#", 1}}, rec)
	connected(t, c)
	m.Restart()
	poll.Eventually(t, "reconnected", func() bool {
		st := c.Status()
		return st.State == StateConnected && st.Reconnects >= 1
	})
	if st := c.Status(); st.LastError == "" {
		t.Fatalf("no last error after a lost connection: %+v", st)
	}
	dev := device(t, m.URL, nil)
	// The resubscription runs right after the connection; publish until it took effect.
	deadline := time.Now().Add(10 * time.Second)
	for {
		wait(t, dev.Publish("s/after", 1, false, "x"))
		select {
		case got := <-rec.ch:
			if got.Topic != "s/after" {
				t.Fatalf("got %+v", got)
			}
			got.Ack()
			return
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no message after the broker restarted: not subscribed again")
		}
	}
}

// A filter unsubscribed while the broker is away is unsubscribed on the next connection,
// even though the broker kept the session (and its subscriptions) across its restart.
func TestClientUnsubscribeWhileDisconnected(t *testing.T) {
	t.Parallel()
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{Persistence: true})
	rec := newRecorder()
	c := startClient(t, clientOpts(m.URL, "gw-u"), []Subscription{{"gone/#", 1}, {"kept/#", 1}}, rec)
	connected(t, c)
	m.Stop()
	poll.Eventually(t, "disconnected", func() bool { return c.Status().State == StateConnecting })
	if err := c.Unsubscribe("gone/#"); err != nil {
		t.Fatal(err)
	}
	m.Start()
	poll.Eventually(t, "reconnected", func() bool { return c.Status().State == StateConnected })
	dev := device(t, m.URL, nil)
	wait(t, dev.Publish("gone/1", 1, false, "x"))
	wait(t, dev.Publish("kept/1", 1, false, "y"))
	got := rec.next(t)
	if got.Topic != "kept/1" {
		t.Fatalf("got %s: the unsubscription was not sent on reconnect", got.Topic)
	}
	got.Ack()
	rec.none(t, 200*time.Millisecond)
}

// The broker is down when the gateway starts: Start does not fail, and the client
// connects once the broker is up.
func TestClientStartsWhileBrokerDown(t *testing.T) {
	t.Parallel()
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	m.Stop()
	rec := newRecorder()
	c := startClient(t, clientOpts(m.URL, "gw-down"), []Subscription{{"x", 1}}, rec)
	if st := c.Status(); st.State != StateConnecting || st.LastError == "" {
		t.Fatalf("status with the broker down: %+v", st)
	}
	m.Start()
	connected(t, c)
	dev := device(t, m.URL, nil)
	wait(t, dev.Publish("x", 1, false, "y"))
	rec.next(t).Ack()
}

// (e) username and password; a refusal fails Start, and the password stays out of logs.
func TestClientPassword(t *testing.T) {
	t.Parallel()
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{Username: "gw", Password: "pa55"})
	bad := clientOpts(m.URL, "gw-e")
	bad.Username, bad.Password = "gw", "wrong"
	c, err := NewClient(bad)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(context.Background(), nil, newRecorder()); err == nil {
		t.Fatal("Start succeeded with a wrong password")
	}

	var logs logBuffer
	good := clientOpts(m.URL, "gw-e")
	good.Username, good.Password = "gw", "pa55"
	good.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := newRecorder()
	c2 := startClient(t, good, []Subscription{{"p", 1}}, rec)
	connected(t, c2)
	dev := device(t, m.URL, func(o *paho.ClientOptions) { o.SetUsername("gw").SetPassword("pa55") })
	wait(t, dev.Publish("p", 1, false, "z"))
	rec.next(t).Ack()

	good.Logger.Info("options", "mqtt", good)
	if strings.Contains(logs.String(), "pa55") || !strings.Contains(logs.String(), "password=REDACTED") {
		t.Fatalf("password not redacted in:\n%s", logs.String())
	}
}

// (f) TLS with a CA and a client certificate, against a broker that requires one.
func TestClientTLSClientCertificate(t *testing.T) {
	t.Parallel()
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{RequireCertificate: true})
	pki := m.PKI
	opts := clientOpts(m.URL, "gw-f")
	opts.TLS = TLSFiles{CA: pki.CA, Cert: pki.ClientCert, Key: pki.ClientKey}
	rec := newRecorder()
	c := startClient(t, opts, []Subscription{{"tls/#", 1}}, rec)
	connected(t, c)
	if err := c.Publish(context.Background(), "tls/1", []byte("secure"), 1, false); err != nil {
		t.Fatal(err)
	}
	got := rec.next(t)
	if string(got.Payload) != "secure" {
		t.Fatalf("got %+v", got)
	}
	got.Ack()

	// Without a certificate, or with one from another CA, the handshake fails: Start
	// keeps trying in the background and Status says why.
	for name, tf := range map[string]TLSFiles{
		"no client certificate": {CA: pki.CA},
		"another CA":            {CA: pki.CA, Cert: pki.OtherClientCert, Key: pki.OtherClientKey},
	} {
		o := clientOpts(m.URL, "gw-f-"+strings.ReplaceAll(name, " ", "-"))
		o.TLS = tf
		c := startClient(t, o, nil, newRecorder())
		if st := c.Status(); st.State != StateConnecting || st.LastError == "" {
			t.Errorf("%s: status %+v", name, st)
		}
	}
}

func TestClientOptionErrors(t *testing.T) {
	for name, o := range map[string]ClientOptions{
		"no broker":         {},
		"bad scheme":        {Broker: "http://127.0.0.1:1883"},
		"no host":           {Broker: "tcp://"},
		"tls files for tcp": {Broker: "tcp://127.0.0.1:1883", TLS: TLSFiles{CA: "ca.pem"}},
		"missing CA file":   {Broker: "ssl://127.0.0.1:8883", TLS: TLSFiles{CA: "/nonexistent/ca.pem"}},
		"cert without key":  {Broker: "ssl://127.0.0.1:8883", TLS: TLSFiles{Cert: "c.pem"}},
	} {
		if _, err := NewClient(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	c, err := NewClient(ClientOptions{Broker: "tcp://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.opts.ClientID, "moongate-") {
		t.Errorf("default client id %q", c.opts.ClientID)
	}
	if err := c.Start(context.Background(), []Subscription{{"a/#/b", 1}}, newRecorder()); err == nil {
		t.Error("Start with a bad filter succeeded")
	}
	c.Close()
	if err := c.Publish(context.Background(), "a", nil, 0, false); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
}

// The Client over websockets, against the embedded broker; and Close leaves nothing running.
func TestClientWebsocketToEmbedded(t *testing.T) {
	before := runtime.NumGoroutine()
	e, err := NewEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", WSListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background(), nil, newRecorder()); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	c, err := NewClient(clientOpts("ws://"+e.WSAddr()+"/mqtt", "gw-ws"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background(), []Subscription{{"x/#", 1}}, rec); err != nil {
		t.Fatal(err)
	}
	connected(t, c)
	if err := e.Publish(context.Background(), "x/1", []byte("hi"), 1, false); err != nil {
		t.Fatal(err)
	}
	got := rec.next(t)
	if string(got.Payload) != "hi" || got.QoS != 1 {
		t.Fatalf("got %+v", got)
	}
	got.Ack()
	poll.Eventually(t, "acked", func() bool { return c.Status().Acked == 1 })
	c.Close()
	e.Close()
	if st := c.Status(); st.State != StateClosed {
		t.Fatalf("state %q after Close", st.State)
	}
	noLeak(t, before)
}

// A subscription the broker refuses right after connecting (an ACL not yet reloaded, a
// cluster node not ready) is retried on the same connection within seconds, not left
// until the next reconnection.
func TestClientRetriesRefusedSubscribe(t *testing.T) {
	t.Parallel()
	aclFile := filepath.Join(t.TempDir(), "acl")
	writeAccessFile(t, aclFile, "pattern write commands/#\n")
	e := startEmbedded(t, EmbeddedOptions{ACLFile: aclFile}, nil, newRecorder())
	url := "tcp://" + e.Addr()
	rec := newRecorder()
	c := startClient(t, clientOpts(url, "gw-r"), []Subscription{{"commands/gw-r/#", 1}}, rec)
	poll.Eventually(t, "the refusal reported", func() bool {
		st := c.Status()
		return st.State == StateConnected && strings.Contains(st.LastError, "refused")
	})
	writeAccessFile(t, aclFile, "pattern write commands/#\npattern read commands/%c/#\n")
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	dev := device(t, url, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		wait(t, dev.Publish("commands/gw-r/led", 1, false, "on"))
		select {
		case got := <-rec.ch:
			if got.Topic != "commands/gw-r/led" || string(got.Payload) != "on" {
				t.Fatalf("got %+v", got)
			}
			got.Ack()
			if st := c.Status(); st.Reconnects != 0 {
				t.Fatalf("subscribed by reconnecting, not by retrying: %+v", st)
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the refused subscription was not retried within 10 s")
		}
	}
}

// The client over TLS (its own dialing, with buffered reads): messages both ways with
// the broker's CA, and a broker whose certificate another CA signed refused.
func TestClientTLS(t *testing.T) {
	pki := mosquittotest.NewPKI(t, t.TempDir())
	e := startEmbedded(t, EmbeddedOptions{TLSListen: "127.0.0.1:0", TLSCert: pki.ServerCert, TLSKey: pki.ServerKey}, nil, newRecorder())
	for _, scheme := range []string{"ssl", "mqtts", "tls"} {
		rec := newRecorder()
		opts := clientOpts(scheme+"://"+e.TLSAddr(), "gw-"+scheme)
		opts.TLS = TLSFiles{CA: pki.CA}
		c := startClient(t, opts, []Subscription{{"x/#", 1}}, rec)
		connected(t, c)
		if err := e.Publish(context.Background(), "x/1", []byte("hi"), 1, false); err != nil {
			t.Fatal(err)
		}
		if got := rec.next(t); string(got.Payload) != "hi" {
			t.Fatalf("%s: got %+v", scheme, got)
		}
		c.Close()
	}
	opts := clientOpts("ssl://"+e.TLSAddr(), "gw-wrong-ca")
	opts.TLS = TLSFiles{CA: mosquittotest.NewPKI(t, t.TempDir()).CA}
	c := startClient(t, opts, nil, newRecorder())
	time.Sleep(500 * time.Millisecond)
	if st := c.Status(); st.State == StateConnected {
		t.Fatal("connected to a broker whose certificate the CA did not sign")
	}
}
