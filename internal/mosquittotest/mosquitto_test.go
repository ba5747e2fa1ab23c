package mosquittotest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func connect(t *testing.T, m *Mosquitto, id string, set func(*paho.ClientOptions)) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(m.URL).SetClientID(id).SetProtocolVersion(4).
		SetConnectTimeout(5 * time.Second).SetAutoReconnect(false)
	if set != nil {
		set(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("connect %s: no answer", id)
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

// With Persistence, a session and the QoS 1 message queued for it survive Stop and Start
// on the same port.
func TestMosquittoPersistence(t *testing.T) {
	t.Parallel()
	m := StartMosquitto(t, MosquittoOptions{Persistence: true})
	got := make(chan string, 1)
	handler := func(_ paho.Client, msg paho.Message) { got <- string(msg.Payload()) }
	sub, err := connect(t, m, "sub", func(o *paho.ClientOptions) { o.SetCleanSession(false).SetDefaultPublishHandler(handler) })
	if err != nil {
		t.Fatal(err)
	}
	if tok := sub.Subscribe("q", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	sub.Disconnect(100)
	pub, err := connect(t, m, "pub", nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok := pub.Publish("q", 1, false, "kept"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	m.Restart()
	if _, err := connect(t, m, "sub", func(o *paho.ClientOptions) { o.SetCleanSession(false).SetDefaultPublishHandler(handler) }); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "kept" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queued message did not survive the restart")
	}
}

func TestMosquittoPassword(t *testing.T) {
	t.Parallel()
	m := StartMosquitto(t, MosquittoOptions{Username: "u", Password: "p"})
	if _, err := connect(t, m, "anon", nil); err == nil {
		t.Error("anonymous client accepted")
	}
	if _, err := connect(t, m, "bad", func(o *paho.ClientOptions) { o.SetUsername("u").SetPassword("x") }); err == nil {
		t.Error("wrong password accepted")
	}
	if _, err := connect(t, m, "good", func(o *paho.ClientOptions) { o.SetUsername("u").SetPassword("p") }); err != nil {
		t.Errorf("right password refused: %v", err)
	}
}

func TestMosquittoClientCertificate(t *testing.T) {
	t.Parallel()
	m := StartMosquitto(t, MosquittoOptions{RequireCertificate: true})
	pem, err := os.ReadFile(m.PKI.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	withCert := func(cert, key string) func(*paho.ClientOptions) {
		return func(o *paho.ClientOptions) {
			tc := &tls.Config{RootCAs: roots}
			if cert != "" {
				kp, err := tls.LoadX509KeyPair(cert, key)
				if err != nil {
					t.Fatal(err)
				}
				tc.Certificates = []tls.Certificate{kp}
			}
			o.SetTLSConfig(tc)
		}
	}
	if _, err := connect(t, m, "good", withCert(m.PKI.ClientCert, m.PKI.ClientKey)); err != nil {
		t.Errorf("client certificate refused: %v", err)
	}
	if _, err := connect(t, m, "none", withCert("", "")); err == nil {
		t.Error("client without a certificate accepted")
	}
	if _, err := connect(t, m, "other", withCert(m.PKI.OtherClientCert, m.PKI.OtherClientKey)); err == nil {
		t.Error("certificate of another CA accepted")
	}
}
