package sink

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store/storetest"
)

// mqttRecord is a bridged record's payload.
type mqttRecord struct {
	Gateway  string          `json:"gateway"`
	Stream   string          `json:"stream"`
	ID       string          `json:"id"`
	Seq      uint64          `json:"seq"`
	TS       int64           `json:"ts"`
	Function string          `json:"function"`
	Data     json.RawMessage `json:"data"`
}

func mqttConfig(b *broker) Config {
	return Config{
		Name: "iot", GatewayID: "pi-kitchen",
		MQTT: &MQTTConfig{
			Broker: b.url(), Topic: "gw/{gateway}/{stream}/{function}",
			TLS:     TLSFiles{CA: b.pki.CA, Cert: b.pki.ClientCert, Key: b.pki.ClientKey},
			Timeout: 5 * time.Second,
		},
		Backoff: fast,
	}
}

// checkMQTTOrder checks the order contract on what the cloud subscriber got
// of one stream: nothing skips ahead of what was sent before, and 1..want
// all arrived. It returns the number of messages of the stream.
func checkMQTTOrder(t testing.TB, msgs []paho.Message, stream string, want uint64) int {
	t.Helper()
	var high uint64
	seen := make(map[uint64]bool)
	n := 0
	for i, m := range msgs {
		var r mqttRecord
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			t.Fatalf("message %d: %v: %s", i, err, m.Payload())
		}
		if r.Stream != stream {
			continue
		}
		n++
		if r.Seq > high+1 {
			t.Fatalf("message %d: seq %d after a highest seq of %d: a gap", i, r.Seq, high)
		}
		high = max(high, r.Seq)
		seen[r.Seq] = true
	}
	for s := uint64(1); s <= want; s++ {
		if !seen[s] {
			t.Fatalf("seq %d of %s never arrived (%d distinct)", s, stream, len(seen))
		}
	}
	return n
}

func TestMQTTBridgeTLSClientCert(t *testing.T) {
	b := startBroker(t)
	sub := subscribe(t, b, "gw/#")
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	s := newSink(t, mqttConfig(b), st, nil, nil)
	if s.Status().State != Offline {
		t.Errorf("state %s before connecting", s.Status().State)
	}
	appendN(t, st, "telemetry", 0, 5000)
	run(t, s)
	// Many PUBLISHes are outstanding at once, not one per round trip.
	sem := s.tr.(*mqttTransport).sem
	most := 0
	poll.Within(t, 20*time.Second, "acknowledged", func() bool {
		most = max(most, len(sem))
		return pending(st, "iot", "telemetry") == 0
	})
	if most < 10 {
		t.Errorf("at most %d PUBLISHes outstanding", most)
	}
	poll.Within(t, 5*time.Second, "received", func() bool { return len(sub.received()) >= 5000 })
	msgs := sub.received()
	checkMQTTOrder(t, msgs, "telemetry", 5000)
	var r mqttRecord
	json.Unmarshal(msgs[0].Payload(), &r)
	if msgs[0].Topic() != "gw/pi-kitchen/telemetry/fn" || r.Gateway != "pi-kitchen" || r.Function != "fn" || string(r.Data) != `{"n":0}` || r.ID == "" || r.TS == 0 {
		t.Errorf("first message %s: %s", msgs[0].Topic(), msgs[0].Payload())
	}
	if st := s.Status(); st.State != Online || st.Delivered != 5000 || st.Kind != "mqtt" {
		t.Errorf("status %+v", st)
	}
}

// The broker goes away in the middle of a drain and comes back: the sink
// resends from its cursor, the subscriber sees no gap, only resends.
func TestMQTTBrokerRestartMidDrain(t *testing.T) {
	b := startBroker(t)
	sub := subscribe(t, b, "gw/#")
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	var logs logBuffer
	s := newSink(t, mqttConfig(b), st, nil, logs.logger())
	appendN(t, st, "telemetry", 0, 20000)
	run(t, s)
	poll.Within(t, 20*time.Second, "a part delivered", func() bool { return pending(st, "iot", "telemetry") < 15000 })
	b.stop()
	poll.Within(t, 5*time.Second, "offline", func() bool { return s.Status().State == Offline })
	left := pending(st, "iot", "telemetry")
	if left == 0 {
		t.Fatal("drained before the broker stopped")
	}
	time.Sleep(100 * time.Millisecond)
	b.start()
	poll.Within(t, 30*time.Second, "acknowledged", func() bool { return pending(st, "iot", "telemetry") == 0 })
	poll.Within(t, 10*time.Second, "received", func() bool {
		msgs := sub.received()
		return len(msgs) > 0 && strings.Contains(string(msgs[len(msgs)-1].Payload()), `"seq":20000`)
	})
	n := checkMQTTOrder(t, sub.received(), "telemetry", 20000)
	t.Logf("%d messages for 20000 records", n)
	if n := logs.count("to=offline"); n != 1 {
		t.Errorf("offline logged %d times:\n%s", n, logs.buf.String())
	}
}

func TestMQTTBrokerDownAtStart(t *testing.T) {
	b := startBroker(t)
	sub := subscribe(t, b, "gw/#")
	b.stop()
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	s := newSink(t, mqttConfig(b), st, nil, nil)
	appendN(t, st, "a", 0, 100)
	run(t, s)
	time.Sleep(200 * time.Millisecond)
	if st := s.Status(); st.State != Offline || st.PendingRecords != 100 || !strings.Contains(st.LastError, "connect") {
		t.Errorf("status %+v", st)
	}
	b.start()
	poll.Within(t, 10*time.Second, "acknowledged", func() bool { return pending(st, "iot", "a") == 0 })
	poll.Within(t, 10*time.Second, "received", func() bool { return len(sub.received()) >= 100 })
	checkMQTTOrder(t, sub.received(), "a", 100)
}
