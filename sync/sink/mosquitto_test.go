package sink

import (
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/mosquittotest"
)

// broker is a Mosquitto started by a test, TLS only, requiring client certificates of
// the test CA, with persistence so that a subscriber's session survives a restart.
type broker struct {
	*mosquittotest.Mosquitto
	pki pki
}

func startBroker(t testing.TB) *broker {
	t.Helper()
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{RequireCertificate: true, Persistence: true,
		Config: "max_queued_messages 0\nmax_inflight_messages 1000\n"})
	return &broker{Mosquitto: m, pki: pki{m.PKI}}
}

func (b *broker) url() string { return b.URL }

// stop ends the broker gracefully (it saves its sessions) and waits; start starts it again.
func (b *broker) stop()  { b.Stop() }
func (b *broker) start() { b.Start() }

// subscriber is a cloud-side consumer of the bridged records.
type subscriber struct {
	mu   sync.Mutex
	msgs []paho.Message
	cli  paho.Client
}

func subscribe(t testing.TB, b *broker, filter string) *subscriber {
	t.Helper()
	tlsCfg, err := TLSFiles{CA: b.pki.CA, Cert: b.pki.ClientCert, Key: b.pki.ClientKey}.Config("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{}
	o := paho.NewClientOptions().AddBroker(b.url()).SetClientID("cloud-consumer").
		SetTLSConfig(tlsCfg).SetCleanSession(false).SetAutoReconnect(true).
		SetMaxReconnectInterval(100 * time.Millisecond).SetOrderMatters(true)
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
	})
	s.cli = paho.NewClient(o)
	if tok := s.cli.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := s.cli.Subscribe(filter, 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.cli.Disconnect(0) })
	return s
}

func (s *subscriber) received() []paho.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]paho.Message(nil), s.msgs...)
}
