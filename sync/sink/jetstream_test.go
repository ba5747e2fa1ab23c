package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsClient connects the test to the cluster and returns its JetStream.
func natsClient(t testing.TB, urls string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// createStream creates the stream once the cluster has a meta leader.
func createStream(t testing.TB, js jetstream.JetStream, cfg jetstream.StreamConfig) jetstream.Stream {
	t.Helper()
	var s jetstream.Stream
	eventually(t, 30*time.Second, "stream "+cfg.Name+" created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		s, err = js.CreateStream(ctx, cfg)
		return err == nil
	})
	return s
}

// streamRecords reads every message of the stream in stream order, one
// by one (retrying while the cluster elects leaders), as the records of the
// payloads the sink sent, by subject.
func streamRecords(t testing.TB, js jetstream.JetStream, name string) map[string][]wireRec {
	t.Helper()
	ctx := context.Background()
	var info *jetstream.StreamInfo
	var stream jetstream.Stream
	eventually(t, 30*time.Second, "the stream's info", func() bool {
		var err error
		if stream, err = js.Stream(ctx, name); err == nil {
			info, err = stream.Info(ctx)
		}
		return err == nil
	})
	out := map[string][]wireRec{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		var m *jetstream.RawStreamMsg
		eventually(t, 30*time.Second, fmt.Sprintf("message %d", seq), func() bool {
			var err error
			m, err = stream.GetMsg(ctx, seq)
			return err == nil
		})
		var r wireRec
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("message %q: %v", m.Data, err)
		}
		if got := m.Header.Get(jetstream.MsgIDHeader); got != r.ID {
			t.Fatalf("Nats-Msg-Id %q for record %s", got, r.ID)
		}
		out[m.Subject] = append(out[m.Subject], r)
	}
	return out
}

func jetStreamConfig(urls string) Config {
	return Config{
		Name: "nats", GatewayID: "pi-kitchen",
		JetStream: &JetStreamConfig{URL: urls, Timeout: 3 * time.Second},
		Backoff:   fast,
	}
}

// TestJetStreamLeaderKilled drains two streams to an R3 stream of a real
// three-node cluster and kills the stream's leader mid-drain: every record
// is in the stream exactly once (JetStream drops the resends by
// Nats-Msg-Id), in each stream's order.
func TestJetStreamLeaderKilled(t *testing.T) {
	c := startNATSCluster(t, 3)
	js := natsClient(t, c.urls())
	stream := createStream(t, js, jetstream.StreamConfig{Name: "MOONGATE", Subjects: []string{"moongate.>"}, Replicas: 3})

	st := openStore(t, t.TempDir())
	defer st.Close()
	const nTel, nAlerts = 20000, 3000
	appendN(t, st, "telemetry", 0, nTel)
	appendN(t, st, "alerts", 0, nAlerts)
	s := newSink(t, jetStreamConfig(c.urls()), st, nil, nil)
	run(t, s)

	ctx := context.Background()
	eventually(t, 30*time.Second, "a quarter in the stream", func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs >= nTel/4
	})
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs >= nTel {
		t.Fatalf("the stream already holds %d records: the kill would not be mid-drain", info.State.Msgs)
	}
	leader := c.node(info.Cluster.Leader)
	c.kill(leader)
	t.Logf("killed the leader %s with %d of %d records stored", leader.name, info.State.Msgs, nTel+nAlerts)

	eventually(t, 120*time.Second, "every record acknowledged", func() bool {
		return pending(st, "nats", "telemetry") == 0 && pending(st, "nats", "alerts") == 0
	})
	got := streamRecords(t, js, "MOONGATE")
	for subject, want := range map[string]int{"moongate.pi-kitchen.telemetry": nTel, "moongate.pi-kitchen.alerts": nAlerts} {
		recs := got[subject]
		if len(recs) != want {
			t.Fatalf("%s: %d messages, want %d exactly", subject, len(recs), want)
		}
		for i, r := range recs {
			if r.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d is record seq %d: lost, doubled or out of order", subject, i, r.Seq)
			}
			if r.Function != "fn" || len(r.Data) == 0 {
				t.Fatalf("%s: record %+v", subject, r)
			}
		}
	}
	if st := s.Status(); st.Kind != "jetstream" || st.Retried == 0 || st.Delivered < nTel+nAlerts || st.State != Online {
		t.Errorf("status %+v", st)
	}
}

// TestJetStreamNoStream: publishing where no stream listens is not a
// delivery; the sink backs off until the stream exists, then delivers.
func TestJetStreamNoStream(t *testing.T) {
	c := startNATSCluster(t, 1)
	js := natsClient(t, c.urls())
	st := openStore(t, t.TempDir())
	defer st.Close()
	appendN(t, st, "a", 0, 100)
	cfg := jetStreamConfig(c.urls())
	cfg.JetStream.Subject = "edge.{gateway}.{stream}.{function}"
	s := newSink(t, cfg, st, nil, nil)
	run(t, s)
	eventually(t, 10*time.Second, "backing off", func() bool { return s.Status().State == BackingOff })
	if p := pending(st, "nats", "a"); p != 100 {
		t.Fatalf("%d pending with no stream, want 100", p)
	}
	createStream(t, js, jetstream.StreamConfig{Name: "EDGE", Subjects: []string{"edge.>"}})
	eventually(t, 10*time.Second, "delivered once the stream exists", func() bool { return pending(st, "nats", "a") == 0 })
	if recs := streamRecords(t, js, "EDGE")["edge.pi-kitchen.a.fn"]; len(recs) != 100 {
		t.Fatalf("%d messages, want 100", len(recs))
	}
}
