package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/mosquittotest"
	"github.com/moongate/moongate/internal/poll"
)

func writeAccessFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tryConnect connects a device and returns the error, without failing the test.
func tryConnect(broker, id, user, pass string) (paho.Client, error) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(id).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetProtocolVersion(4)) // no fallback to 3.1: one CONNECT per try
	tok := c.Connect()
	tok.WaitTimeout(10 * time.Second)
	return c, tok.Error()
}

func TestPasswordFileAndReload(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if err := SetPassword(pw, "alice", "alice-pass"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(pw)
	if strings.Contains(string(data), "alice-pass") || !strings.HasPrefix(string(data), "alice:$2a$") {
		t.Fatalf("the password file holds %q", data)
	}
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{PasswordFile: pw}, []Subscription{{"t/#", 1}}, rec)
	url := "tcp://" + e.Addr()
	if _, err := tryConnect(url, "a1", "alice", "wrong"); err == nil {
		t.Fatal("a wrong password connected")
	}
	if _, err := tryConnect(url, "a2", "", ""); err == nil {
		t.Fatal("an anonymous device connected")
	}
	alice := device(t, url, func(o *paho.ClientOptions) { o.SetUsername("alice").SetPassword("alice-pass") })

	// bob is added and alice stays connected; then alice is removed and only she goes.
	if err := SetPassword(pw, "bob", "bob-pass"); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	bob := device(t, url, func(o *paho.ClientOptions) { o.SetUsername("bob").SetPassword("bob-pass") })
	if !alice.IsConnectionOpen() {
		t.Fatal("adding a user disconnected another device")
	}
	if err := SetPassword(pw, "alice", ""); err != nil {
		t.Fatal(err)
	}
	// The broker notices the change by itself, within a few seconds.
	poll.Eventually(t, "alice disconnected after her removal", func() bool { return !alice.IsConnectionOpen() })
	if !bob.IsConnectionOpen() {
		t.Fatal("removing alice disconnected bob")
	}
	wait(t, bob.Publish("t/x", 0, false, "still here"))
	if m := rec.next(t); string(m.Payload) != "still here" {
		t.Fatalf("got %q", m.Payload)
	}
	if st := e.Status(); st.AuthFailures != 2 {
		t.Fatalf("auth failures %d, want 2", st.AuthFailures)
	}

	// A broken file keeps the rules in force.
	writeAccessFile(t, pw, "this is not a password file\n")
	if err := e.Reload(); err == nil || !strings.Contains(err.Error(), pw+":1") {
		t.Fatalf("reload of a broken file: %v", err)
	}
	if !bob.IsConnectionOpen() {
		t.Fatal("a broken password file disconnected bob")
	}
}

// After a few wrong passwords from one address, that address is refused without a check
// for a while, even with the right password; every refusal is counted.
func TestLoginThrottled(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "passwd")
	if err := SetPassword(pw, "dev", "right"); err != nil {
		t.Fatal(err)
	}
	e := startEmbedded(t, EmbeddedOptions{PasswordFile: pw}, nil, newRecorder())
	url := "tcp://" + e.Addr()
	for range maxLoginFailures {
		if _, err := tryConnect(url, "guess", "dev", "wrong"); err == nil {
			t.Fatal("a wrong password connected")
		}
	}
	if _, err := tryConnect(url, "real", "dev", "right"); err == nil {
		t.Fatal("the address was not throttled")
	}
	if st := e.Status(); st.AuthFailures != maxLoginFailures || st.LoginsThrottled != 1 {
		t.Fatalf("failures %d, throttled %d", st.AuthFailures, st.LoginsThrottled)
	}
}

func TestACL(t *testing.T) {
	dir := t.TempDir()
	pw, aclFile := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	for _, u := range []string{"alice", "bob", "ops"} {
		if err := SetPassword(pw, u, u+"-pass"); err != nil {
			t.Fatal(err)
		}
	}
	writeAccessFile(t, aclFile, `# each device its own readings; ops reads all and may offer firmware
pattern write sensors/%u/#
pattern read commands/%c/#
user ops
topic read sensors/#
topic deny sensors/bob/secret
topic write moongate/devices/+/fw/offer
`)
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{PasswordFile: pw, ACLFile: aclFile}, []Subscription{{"#", 0}}, rec)
	url := "tcp://" + e.Addr()
	login := func(user, id string) paho.Client {
		return device(t, url, func(o *paho.ClientOptions) { o.SetUsername(user).SetPassword(user + "-pass").SetClientID(id) })
	}
	alice, ops := login("alice", "alice-1"), login("ops", "ops-1")

	wait(t, alice.Publish("sensors/alice/temp", 0, false, "own"))
	if m := rec.next(t); m.Topic != "sensors/alice/temp" {
		t.Fatalf("got %s", m.Topic)
	}
	for _, topic := range []string{"sensors/bob/temp", "commands/alice-1/x", "moongate/devices/alice-1/fw/offer", "elsewhere"} {
		wait(t, alice.Publish(topic, 0, false, "foreign"))
	}
	// A denied QoS 1 publish is acknowledged and dropped: a device that were disconnected
	// instead would resend it at every reconnect.
	wait(t, alice.Publish("sensors/bob/temp", 1, false, "foreign"))
	rec.none(t, 200*time.Millisecond)
	if !alice.IsConnectionOpen() {
		t.Fatal("a denied QoS 1 publish disconnected the device")
	}

	subscribe := func(c paho.Client, filter string) byte {
		t.Helper()
		tok := c.Subscribe(filter, 0, func(paho.Client, paho.Message) {})
		wait(t, tok)
		return tok.(*paho.SubscribeToken).Result()[filter]
	}
	if code := subscribe(alice, "sensors/#"); code != 0x80 {
		t.Errorf("alice's subscription to sensors/#: %#x, want refused", code)
	}
	if code := subscribe(alice, "commands/alice-1/#"); code != 0 {
		t.Errorf("alice's subscription to her commands: %#x", code)
	}
	got := make(chan string, 10)
	wait(t, ops.Subscribe("sensors/#", 0, func(_ paho.Client, m paho.Message) { got <- m.Topic() }))
	bob := login("bob", "bob-1")
	wait(t, bob.Publish("sensors/bob/secret", 0, false, "x"))
	wait(t, bob.Publish("sensors/bob/temp", 0, false, "x"))
	if topic := <-got; topic != "sensors/bob/temp" {
		t.Errorf("ops received %s: a deny rule inside a grant must hold at delivery", topic)
	}
	wait(t, ops.Publish("moongate/devices/bob-1/fw/offer", 0, false, "v2"))
	for m := rec.next(t); m.Topic != "moongate/devices/bob-1/fw/offer"; m = rec.next(t) {
	}
	if st := e.Status(); st.ACLDenied < 6 {
		t.Errorf("denials counted: %d", st.ACLDenied)
	}
}

// Without an ACL file every device may use every topic, except the gateway's own.
func TestReservedTopics(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{}, []Subscription{{"#", 0}, {"$SYS/fake", 0}}, rec)
	c := device(t, "tcp://"+e.Addr(), nil)
	wait(t, c.Publish("moongate/devices/x/fw/offer", 0, false, "spoofed"))
	wait(t, c.Publish("sensors/a", 0, false, "fine"))
	if m := rec.next(t); m.Topic != "sensors/a" {
		t.Fatalf("a device wrote the gateway's topic %s", m.Topic)
	}
}

func TestCovers(t *testing.T) {
	for _, c := range []struct {
		filter, sub string
		want        bool
	}{
		{"sensors/#", "sensors/#", true}, {"sensors/#", "sensors/a/+", true}, {"sensors/+/temp", "sensors/#", false},
		{"sensors/+/temp", "sensors/+/temp", true}, {"sensors/a/temp", "sensors/+/temp", false},
		{"#", "$SYS/#", false}, {"#", "a/#", true}, {"+/x", "$SYS/x", false}, {"a/b", "a/b", true},
		{"sensors/#", "sensors", true}, {"a/+", "a/b/c", false},
	} {
		if got := covers(c.filter, c.sub); got != c.want {
			t.Errorf("covers(%q, %q) = %v", c.filter, c.sub, got)
		}
	}
}

// A connection that never sends CONNECT is closed after the connect timeout, and one host
// cannot open more connections than its cap.
func TestConnectionBounds(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{ConnectTimeout: 300 * time.Millisecond, MaxConnectionsPerHost: 2}, nil, newRecorder())
	silent, err := net.Dial("tcp", e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from a connection that sent nothing")
	}
	if d := time.Since(start); d >= 10*time.Second {
		t.Fatal("a connection without CONNECT stayed open")
	}
	poll.Eventually(t, "the silent connection's place given back", func() bool { return e.conns.Open() == 0 })
	device(t, "tcp://"+e.Addr(), nil)
	device(t, "tcp://"+e.Addr(), nil)
	if _, err := tryConnect("tcp://"+e.Addr(), "third", "", ""); err == nil {
		t.Fatal("a third connection from one host was accepted")
	}
	if st := e.Status(); st.ConnectionsRefused != 1 {
		t.Fatalf("refused connections counted: %d", st.ConnectionsRefused)
	}
}

// On the TLS listener with a client CA, a device's certificate is its identity: its
// common name is the user the ACL's %u names, and no password is asked; a certificate
// of another CA is refused.
func TestCertificateIdentity(t *testing.T) {
	dir := t.TempDir()
	pki := mosquittotest.NewPKI(t, dir)
	aclFile := filepath.Join(dir, "acl")
	writeAccessFile(t, aclFile, "pattern write sensors/%u/#\n")
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{TLSListen: "127.0.0.1:0", TLSCert: pki.ServerCert, TLSKey: pki.ServerKey,
		ClientCA: pki.CA, ACLFile: aclFile}, []Subscription{{"sensors/#", 0}}, rec)
	tlsDevice := func(cert, key string) (paho.Client, error) {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		caPEM, _ := os.ReadFile(pki.CA)
		roots.AppendCertsFromPEM(caPEM)
		c := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + e.TLSAddr()).SetClientID("cert-dev").
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
			SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}))
		tok := c.Connect()
		tok.WaitTimeout(10 * time.Second)
		return c, tok.Error()
	}
	if _, err := tlsDevice(pki.OtherClientCert, pki.OtherClientKey); err == nil {
		t.Fatal("a certificate of another CA connected")
	}
	c, err := tlsDevice(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatalf("the CA's client certificate: %v", err)
	}
	defer c.Disconnect(50)
	wait(t, c.Publish("sensors/other/temp", 0, false, "no"))
	wait(t, c.Publish("sensors/moongate-test/temp", 0, false, "yes"))
	if m := rec.next(t); m.Topic != "sensors/moongate-test/temp" {
		t.Fatalf("the ACL did not apply to the certificate's name: got %s", m.Topic)
	}
	if ds := e.Devices(); len(ds) != 1 || ds[0].User != "moongate-test" || ds[0].Listener != "tls" {
		t.Fatalf("devices: %+v", ds)
	}
}

// A will is a publish the broker makes for the device: a device may not leave one it
// could not publish itself ($SYS, the gateway's topics, a wildcard).
func TestWillTopicsChecked(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{}, nil, newRecorder())
	for _, c := range []struct {
		topic string
		ok    bool
	}{{"$SYS/broker/uptime", false}, {"moongate/devices/x/fw/state", false}, {"sensors/#", false}, {"sensors/x/status", true}} {
		cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://"+e.Addr()).SetClientID("w").SetProtocolVersion(4).
			SetAutoReconnect(false).SetWill(c.topic, "gone", 0, true))
		tok := cl.Connect()
		tok.WaitTimeout(10 * time.Second)
		if (tok.Error() == nil) != c.ok {
			t.Errorf("will on %s: connect error %v", c.topic, tok.Error())
		}
		cl.Disconnect(10)
	}
}

// A filter thousands of levels deep is refused in its SUBACK, at once, and the broker
// goes on serving.
func TestDeepFiltersRefused(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{}, nil, newRecorder())
	c := device(t, "tcp://"+e.Addr(), nil)
	deep := strings.Repeat("a/", 32766) + "#"
	start := time.Now()
	tok := c.SubscribeMultiple(map[string]byte{deep: 0, deep[2:]: 0, deep[4:]: 0, "ok/#": 0}, nil)
	wait(t, tok)
	res := tok.(*paho.SubscribeToken).Result()
	t.Logf("a SUBSCRIBE of 3 filters of 32767 levels answered in %v", time.Since(start))
	if res[deep] != 0x80 || res["ok/#"] != 0 {
		t.Fatalf("SUBACK %v", res)
	}
	wait(t, c.Publish(strings.Repeat("x/", 40)+"y", 0, false, "deep"))
	if !c.IsConnectionOpen() {
		t.Fatal("the device was dropped")
	}
}

// A device may leave at most maxRetainedPerClient retained messages: the next is delivered
// but not kept, counted; clearing one makes room.
func TestRetainedBounded(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{DeviceRate: -1, DeviceByteRate: -1}, []Subscription{{"r/#", 0}}, rec)
	c := device(t, "tcp://"+e.Addr(), nil)
	for i := range maxRetainedPerClient + 1 {
		wait(t, c.Publish(fmt.Sprintf("r/%d", i), 0, true, "v"))
	}
	for range maxRetainedPerClient + 1 {
		rec.next(t) // every one was delivered
	}
	if n := e.Status().RetainRefused; n != 1 {
		t.Fatalf("%d retained publishes refused, want 1", n)
	}
	if n := len(e.srv.Topics.Messages("r/#")); n != maxRetainedPerClient {
		t.Fatalf("%d retained messages kept, want %d", n, maxRetainedPerClient)
	}
	wait(t, c.Publish("r/0", 0, true, "")) // clears r/0
	wait(t, c.Publish("r/new", 0, true, "v"))
	poll.Eventually(t, "room after a clear", func() bool { return len(e.srv.Topics.Messages("r/#")) == maxRetainedPerClient })
	if n := e.Status().RetainRefused; n != 1 {
		t.Fatalf("after a clear, %d refused", n)
	}
}
