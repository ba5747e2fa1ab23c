package mqtt

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestDeviceFiltersModel runs random subscribes, unsubscribes (held or not), clean
// reconnections and QoS 0 readings against the embedded broker, with the gateway
// subscribed to some of the topics, and checks each device's deliveries against a model
// of what it holds: a reading skips mochi's forwarding only when nobody can want it.
func TestDeviceFiltersModel(t *testing.T) {
	filters := []string{"t/#", "t/+/x", "t/a/x", "t/b", "+/a/+", "#", "u/+"}
	topics := []string{"t/a/x", "t/b", "t/c/x", "u/a/v", "t", "u/b"}
	const clients = 4
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 12))
			rec := newRecorder()
			e := startEmbedded(t, EmbeddedOptions{}, []Subscription{{"t/#", 0}}, rec)
			url := "tcp://" + e.Addr()
			pub := device(t, url, nil)

			type sub struct {
				c    paho.Client
				got  chan string // test topics, and "barrier/N"
				held map[string]bool
			}
			subs := make([]*sub, clients)
			connect := func(i int) {
				if subs[i] != nil {
					subs[i].c.Disconnect(50)
				}
				s := &sub{got: make(chan string, 100), held: map[string]bool{}}
				s.c = device(t, url, func(o *paho.ClientOptions) {
					o.SetClientID(fmt.Sprintf("model-%d-%d", seed, i)).SetCleanSession(true).SetAutoReconnect(false)
				})
				wait(t, s.c.Subscribe("barrier/#", 0, func(_ paho.Client, m paho.Message) { s.got <- m.Topic() }))
				subs[i] = s
			}
			for i := range clients {
				connect(i)
			}
			for step := range 150 {
				i := rng.IntN(clients)
				s := subs[i]
				switch op := rng.IntN(10); {
				case op < 3:
					f := filters[rng.IntN(len(filters))]
					wait(t, s.c.Subscribe(f, 0, func(_ paho.Client, m paho.Message) { s.got <- m.Topic() }))
					s.held[f] = true
				case op < 5:
					f := filters[rng.IntN(len(filters))] // held or not: one client's never takes another's
					wait(t, s.c.Unsubscribe(f))
					delete(s.held, f)
				case op < 6:
					connect(i)
				default:
					topic := topics[rng.IntN(len(topics))]
					wait(t, pub.Publish(topic, 0, false, "r"))
					barrier := fmt.Sprintf("barrier/%d", step)
					wait(t, pub.Publish(barrier, 0, false, "b"))
					for j, s := range subs {
						want := slices.ContainsFunc(filtersOf(s.held), func(f string) bool { return Match(f, topic) })
						got := false
						for done := false; !done; {
							select {
							case m := <-s.got:
								switch m {
								case topic:
									got = true
								case barrier:
									done = true
								}
							case <-time.After(5 * time.Second):
								t.Fatalf("step %d: device %d never got %s", step, j, barrier)
							}
						}
						if got != want {
							t.Fatalf("step %d: device %d holding %v got %s: %v, want %v", step, j, filtersOf(s.held), topic, got, want)
						}
					}
				}
			}
		})
	}
}

func filtersOf(held map[string]bool) []string {
	var out []string
	for f := range held {
		out = append(out, f)
	}
	return out
}

func TestDeviceFiltersShared(t *testing.T) {
	var f deviceFilters
	sub := func(filters ...string) []packets.Subscription {
		var out []packets.Subscription
		for _, s := range filters {
			out = append(out, packets.Subscription{Filter: s})
		}
		return out
	}
	if f.mayMatch("a/b") {
		t.Fatal("nothing subscribed, yet a match")
	}
	f.add("c1", sub("$share/g/a/#", "a/#"))
	f.remove("c1", sub("a/#")) // the shared one is still held
	if !f.mayMatch("a/b") {
		t.Fatal("the shared subscription was forgotten with the plain one")
	}
	f.remove("c2", sub("$share/g/a/#")) // another client's unsubscribe
	if !f.mayMatch("a/b") {
		t.Fatal("another client's unsubscribe took the filter out")
	}
	f.remove("c1", sub("$share/g/a/#"))
	if f.mayMatch("a/b") {
		t.Fatal("nothing held, yet a match")
	}
	for i := range maxScannedFilters + 1 {
		f.add("c1", sub(fmt.Sprintf("x/%d", i)))
	}
	if !f.mayMatch("anything") {
		t.Fatal("past maxScannedFilters every reading must be forwarded")
	}
}
