package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/natstest"
	"github.com/moongate/moongate/internal/poll"
)

// TestJetStreamSinkKill9: a backlog drains to a JetStream stream on a real nats-server;
// the gateway is killed with SIGKILL mid-drain, with publishes in flight and its cursors
// behind what the stream stored, and started again. It resends from its cursors, the
// stream drops the resends by Nats-Msg-Id, and every record is in the stream exactly
// once, in its stream's order.
func TestJetStreamSinkKill9(t *testing.T) {
	nc := natstest.Start(t, 1)
	js := nc.Client()
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	dir := t.TempDir()
	config := emitterConfig("jstest", apiPort, mqttPort, fmt.Sprintf(`    - name: nats
      jetstream: {url: %q, timeout: 3s}
      batch: {max_records: %d}
`, nc.URLs(), sinkMaxRecords))
	cfg := writeGatewayFiles(t, dir, config, map[string]string{"emitter.lua": emitterLua})
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()

	// The backlog is committed before the stream exists, so the drain starts all at once
	// when it does.
	const messages = 200
	const backlog = messages * sinkPerMessage
	produce(t, fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), 0, messages)
	poll.Within(t, 20*time.Second, "the backlog committed", func() bool { return gw.metric("moongate_outbox_pending_records") >= backlog })
	stream := natstest.CreateStream(t, js, jetstream.StreamConfig{Name: "MOONGATE", Subjects: []string{"moongate.>"}})
	ctx := context.Background()
	stored := func() uint64 {
		info, err := stream.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	poll.Within(t, 30*time.Second, "a quarter of the backlog in the stream", func() bool { return stored() >= backlog/4 })
	gw.kill9()
	atKill := stored()
	if atKill >= backlog {
		t.Fatalf("the stream already held all %d records when the gateway was killed", atKill)
	}
	t.Logf("killed with %d of %d records stored", atKill, backlog)
	gw.start()
	poll.Within(t, 30*time.Second, "every record delivered", func() bool {
		return syncStatus(t, gw).Sinks[0].Pending == 0
	})
	if code, out, errOut := cli(t, gw.api(), "status"); code != 0 || !regexp.MustCompile(`(?m)^nats +jetstream +online +0 `).MatchString(out) {
		t.Errorf("moongate status: exit %d, no row for the jetstream sink:\n%s%s", code, out, errOut)
	}
	gw.stop()

	seqs := map[string][]uint64{}
	for _, m := range natstest.Messages(t, js, "MOONGATE") {
		var r rxRecord
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("message %q: %v", m.Data, err)
		}
		if m.Header.Get(jetstream.MsgIDHeader) != r.ID {
			t.Fatalf("message without the record's id as Nats-Msg-Id: %v", m.Header)
		}
		seqs[m.Subject] = append(seqs[m.Subject], r.Seq)
	}
	total := 0
	for subject, ss := range seqs {
		for i, s := range ss {
			if s != uint64(i+1) {
				t.Fatalf("%s: message %d is seq %d: lost, doubled or out of order", subject, i, s)
			}
		}
		total += len(ss)
	}
	if len(seqs) != sinkStreams || total != backlog {
		t.Fatalf("%d records on %d subjects, want %d on %d", total, len(seqs), backlog, sinkStreams)
	}
}
