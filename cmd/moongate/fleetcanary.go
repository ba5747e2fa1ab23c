package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/fleet"
)

// canaryPush is `fleet push --canary N`: the revision goes first to N online gateways of
// the group only (its canary list), and to the whole group, as the next revision, once
// they report it applied; past --max-failures it halts there.
type canaryPush struct {
	n, maxFailures int
	wait           time.Duration
	key            string
}

func (cp canaryPush) run(ctx context.Context, bf brokerFlags, payload []byte, stdout io.Writer) error {
	if cp.key == "" {
		return usagef("--canary needs --sign-key: the canary revision names its gateways, so it is signed here")
	}
	key, err := os.ReadFile(cp.key)
	if err != nil {
		return usagef("read %s: %v", cp.key, err)
	}
	plain := payload
	var s fleet.Signed
	if json.Unmarshal(payload, &s) == nil && len(s.Document) > 0 {
		plain = s.Document
	}
	doc, err := fleet.Parse(plain)
	if err != nil {
		return usagef("%v", err)
	}
	kind, group, _ := fleet.SplitTarget(doc.Target)
	if kind != fleet.GroupPrefix {
		return usagef("--canary pushes to a group; %s is one gateway", doc.Target)
	}
	topic, _ := fleet.DesiredTopic(doc.Target)
	cctx, cancel := context.WithTimeout(ctx, *bf.timeout)
	c, err := bf.connect(cctx)
	cancel()
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	w := &reportWatch{reports: map[string]fleet.Report{}, online: map[string]string{}, changed: make(chan struct{}, 1)}
	if err := waitToken(ctx, c.SubscribeMultiple(map[string]byte{fleet.AllReported: 1, fleet.AllOnline: 1}, w.handle)); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	time.Sleep(2 * time.Second) // the retained reports come right after the subscription
	canaries := w.members(group)
	if len(canaries) < cp.n {
		return fmt.Errorf("--canary %d: only %d gateways of group %s are online (%s)", cp.n, len(canaries), group, strings.Join(canaries, ", "))
	}
	canaries = canaries[:cp.n]

	publish := func(d fleet.Document) error {
		b, _ := json.Marshal(d)
		signed, err := fleet.Sign(b, string(key))
		if err != nil {
			return usageError{err}
		}
		p, _ := json.Marshal(signed)
		return waitToken(ctx, c.Publish(topic, 1, true, p))
	}
	canaryDoc := *doc
	canaryDoc.Canary = canaries
	if err := publish(canaryDoc); err != nil {
		return fmt.Errorf("publish the canary revision: %w", err)
	}
	fmt.Fprintf(stdout, "pushed %s revision %d to the canaries %s\n", doc.Target, doc.Revision, strings.Join(canaries, ", "))
	failed := w.await(ctx, canaries, doc.Target, doc.Revision, cp.wait)
	if len(failed) > cp.maxFailures {
		return fmt.Errorf("canary push halted: %d of %d canaries failed (--max-failures %d): %s; the rest of %s stays on its revision",
			len(failed), len(canaries), cp.maxFailures, strings.Join(failed, "; "), doc.Target)
	}
	all := *doc
	all.Revision++
	if err := publish(all); err != nil {
		return fmt.Errorf("publish revision %d: %w", all.Revision, err)
	}
	fmt.Fprintf(stdout, "the canaries applied it (%d failed); pushed %s revision %d (%d functions) to every gateway of the group\n",
		len(failed), doc.Target, all.Revision, len(all.Functions))
	return nil
}

// reportWatch keeps the gateways' retained reports and online states.
type reportWatch struct {
	mu      sync.Mutex
	reports map[string]fleet.Report
	online  map[string]string
	changed chan struct{} // cap 1
}

func (w *reportWatch) handle(_ paho.Client, m paho.Message) {
	id := fleet.GatewayOf(m.Topic())
	if id == "" || len(m.Payload()) == 0 {
		return
	}
	w.mu.Lock()
	if strings.HasSuffix(m.Topic(), "/online") {
		w.online[id] = string(m.Payload())
	} else {
		var r fleet.Report
		if json.Unmarshal(m.Payload(), &r) == nil {
			w.reports[id] = r
		}
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// members are the online gateways that report joining group, sorted.
func (w *reportWatch) members(group string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []string
	for id, r := range w.reports {
		if w.online[id] == "online" && slices.Contains(r.Groups, group) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// await waits until each gateway reports target at revision applied, or refused, or the
// wait passes; it returns the failures, "gateway: why".
func (w *reportWatch) await(ctx context.Context, ids []string, target string, rev uint64, wait time.Duration) []string {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	refusal := fmt.Sprintf("%s revision %d", target, rev)
	for {
		var failed, pending []string
		w.mu.Lock()
		for _, id := range ids {
			r := w.reports[id]
			switch {
			case slices.Contains(r.Layers, fleet.LayerReport{Target: target, Revision: rev}):
			case strings.Contains(r.LastError, refusal):
				failed = append(failed, id+": "+r.LastError)
			default:
				pending = append(pending, id)
			}
		}
		w.mu.Unlock()
		if len(pending) == 0 {
			return failed
		}
		select {
		case <-w.changed:
		case <-deadline.C:
			for _, id := range pending {
				failed = append(failed, fmt.Sprintf("%s: did not report revision %d within %s", id, rev, wait))
			}
			return failed
		case <-ctx.Done():
			return append(failed, ctx.Err().Error())
		}
	}
}
