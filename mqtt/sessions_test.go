package mqtt

import (
	"fmt"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/poll"
)

// Devices that come and go with new client ids and persistent sessions do not grow the
// broker: past the per-address bound, the sessions of the devices that went away longest
// ago end, counted; the newest stay, and a clean session never counts.
func TestEmbeddedBoundsSessions(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{MaxSessionsPerHost: 10}, nil, newRecorder())
	for i := range 25 {
		c := device(t, "tcp://"+e.Addr(), func(o *paho.ClientOptions) {
			o.SetClientID(fmt.Sprintf("roamer-%d", i)).SetCleanSession(false)
		})
		c.Subscribe(fmt.Sprintf("cmd/%d", i), 1, nil).Wait()
		c.Disconnect(0)
		poll.Eventually(t, "the device gone", func() bool { return e.Status().Clients == 0 })
	}
	clean := device(t, "tcp://"+e.Addr(), nil) // clean session: not a session that stays
	defer clean.Disconnect(0)
	st := e.Status()
	// The 25th connection found 24 sessions waiting and its own: 15 ended.
	if st.Sessions != 10 || st.SessionsEvicted != 15 {
		t.Fatalf("%d sessions held, %d ended; want 10 and 15", st.Sessions, st.SessionsEvicted)
	}
	for i := range 25 {
		_, kept := e.srv.Clients.Get(fmt.Sprintf("roamer-%d", i))
		if kept != (i >= 15) {
			t.Errorf("roamer-%d: kept %v, want the newest 10 kept", i, kept)
		}
	}
	if subs := e.srv.Topics.Subscribers("cmd/3"); len(subs.Subscriptions) != 0 {
		t.Errorf("an ended session's subscription is still there: %v", subs.Subscriptions)
	}
}
