package sink

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/moongate/moongate/internal/mosquittotest"
	"github.com/moongate/moongate/internal/natstest"
	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store"
	"github.com/moongate/moongate/sync/store/storetest"
)

// streamRecords reads every message of the stream, in stream order, as the
// records of the payloads the sink sent, by subject.
func streamRecords(t testing.TB, js jetstream.JetStream, name string) map[string][]wireRec {
	t.Helper()
	out := map[string][]wireRec{}
	for _, m := range natstest.Messages(t, js, name) {
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
	c := natstest.Start(t, 3)
	js := c.Client()
	stream := natstest.CreateStream(t, js, jetstream.StreamConfig{Name: "MOONGATE", Subjects: []string{"moongate.>"}, Replicas: 3})

	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	const nTel, nAlerts = 20000, 3000
	appendN(t, st, "telemetry", 0, nTel)
	appendN(t, st, "alerts", 0, nAlerts)
	s := newSink(t, jetStreamConfig(c.URLs()), st, nil, nil)
	run(t, s)

	ctx := context.Background()
	poll.Within(t, 30*time.Second, "a quarter in the stream", func() bool {
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
	leader := c.Node(info.Cluster.Leader)
	c.Kill(leader)
	t.Logf("killed the leader %s with %d of %d records stored", leader.Name, info.State.Msgs, nTel+nAlerts)

	poll.Within(t, 120*time.Second, "every record acknowledged", func() bool {
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
	c := natstest.Start(t, 1)
	js := c.Client()
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	appendN(t, st, "a", 0, 100)
	cfg := jetStreamConfig(c.URLs())
	cfg.JetStream.Subject = "edge.{gateway}.{stream}.{function}"
	s := newSink(t, cfg, st, nil, nil)
	run(t, s)
	poll.Within(t, 10*time.Second, "backing off", func() bool { return s.Status().State == BackingOff })
	if p := pending(st, "nats", "a"); p != 100 {
		t.Fatalf("%d pending with no stream, want 100", p)
	}
	natstest.CreateStream(t, js, jetstream.StreamConfig{Name: "EDGE", Subjects: []string{"edge.>"}})
	poll.Within(t, 10*time.Second, "delivered once the stream exists", func() bool { return pending(st, "nats", "a") == 0 })
	if recs := streamRecords(t, js, "EDGE")["edge.pi-kitchen.a.fn"]; len(recs) != 100 {
		t.Fatalf("%d messages, want 100", len(recs))
	}
}

// TestJetStreamTLSAndCreds: a server that speaks TLS only, requires a client
// certificate and admits only holders of a user's credentials; the sink gets
// in with tls and creds, and refuses a creds file others may read.
func TestJetStreamTLSAndCreds(t *testing.T) {
	dir := t.TempDir()
	pki := mosquittotest.NewPKI(t, dir)
	auth := natstest.NewAuth(t, dir)
	c := natstest.StartWith(t, 1, natstest.Options{TLS: pki, Auth: auth})
	js := c.Client()
	natstest.CreateStream(t, js, jetstream.StreamConfig{Name: "MOONGATE", Subjects: []string{"moongate.>"}})

	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	appendN(t, st, "a", 0, 50)
	cfg := jetStreamConfig(c.URLs())
	cfg.JetStream.TLS = TLSFiles{CA: pki.CA, Cert: pki.ClientCert, Key: pki.ClientKey}
	cfg.JetStream.Creds = auth.UserCreds
	if err := os.Chmod(auth.UserCreds, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Check(cfg); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Fatalf("a world-readable creds file: %v", err)
	}
	if err := os.Chmod(auth.UserCreds, 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, cfg, st, nil, nil)
	run(t, s)
	poll.Within(t, 10*time.Second, "delivered over TLS with creds", func() bool { return pending(st, "nats", "a") == 0 })
	if recs := streamRecords(t, js, "MOONGATE")["moongate.pi-kitchen.a"]; len(recs) != 50 {
		t.Fatalf("%d messages, want 50", len(recs))
	}
}

// TestJetStreamRecordTooLarge: a record larger than the stream takes is
// dead-lettered, as an HTTP receiver's rejected record is, and the records
// around it are delivered once, in order.
func TestJetStreamRecordTooLarge(t *testing.T) {
	c := natstest.Start(t, 1)
	js := c.Client()
	natstest.CreateStream(t, js, jetstream.StreamConfig{Name: "MOONGATE", Subjects: []string{"moongate.>"}, MaxMsgSize: 1000})
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	appendN(t, st, "a", 0, 30)
	if _, err := st.Append(t.Context(), appendRec("a", `{"pad":"`+strings.Repeat("x", 2000)+`"}`)); err != nil {
		t.Fatal(err)
	}
	appendN(t, st, "a", 30, 30)
	cfg := jetStreamConfig(c.URLs())
	cfg.Batch.MaxRecords = 8
	s := newSink(t, cfg, st, nil, nil)
	run(t, s)
	poll.Within(t, 10*time.Second, "delivered around the big record", func() bool { return pending(st, "nats", "a") == 0 })
	recs := streamRecords(t, js, "MOONGATE")["moongate.pi-kitchen.a"]
	if len(recs) != 60 {
		t.Fatalf("%d messages, want 60", len(recs))
	}
	for i, r := range recs {
		want := uint64(i + 1)
		if i >= 30 {
			want++ // seq 31 is the big one
		}
		if r.Seq != want {
			t.Fatalf("message %d is seq %d, want %d", i, r.Seq, want)
		}
	}
	dead, err := st.Read(store.DeadStream, 0, 0, 0)
	if err != nil || len(dead) != 1 || !strings.Contains(string(dead[0].Data), `"seq":31`) {
		t.Fatalf("$dead: %v %v", dead, err)
	}
	if st := s.Status(); st.Dropped[dropDeadLetter] != 1 {
		t.Errorf("dropped %v", st.Dropped)
	}
}
