package homeassistant

import (
	"context"
	"fmt"
	"slices"
	"testing"
)

type published struct{ topic, payload string }

type recordingPub struct{ got []published }

func (r *recordingPub) Publish(_ context.Context, topic string, payload []byte, qos byte, retain bool) error {
	if qos != 1 || !retain {
		return fmt.Errorf("%s: qos %d retain %v: discovery messages are retained, QoS 1", topic, qos, retain)
	}
	r.got = append(r.got, published{topic, string(payload)})
	return nil
}

// Announce sends what is new or changed, and removes what is gone, once.
func TestAnnounceChangesOnly(t *testing.T) {
	pub := &recordingPub{}
	a := &Announcer{Prefix: "homeassistant", Device: Device{ID: "pi kitchen"}, PresenceTopic: "moongate/pi_kitchen/status", Pub: pub}
	temp := Entity{Component: Sensor, ObjectID: "room_temp", Name: "room temp", StateTopic: "s"}
	lux := Entity{Component: Sensor, ObjectID: "room.lux", Name: "room lux", StateTopic: "s"}
	topics := func() (out []string) {
		for _, p := range pub.got {
			out = append(out, p.topic)
		}
		pub.got = nil
		return out
	}
	if err := a.Announce(context.Background(), []Entity{temp, lux}); err != nil {
		t.Fatal(err)
	}
	want := []string{"homeassistant/sensor/pi_kitchen/room_lux/config", "homeassistant/sensor/pi_kitchen/room_temp/config"}
	if got := topics(); !slices.Equal(got, want) {
		t.Fatalf("first: %v", got)
	}
	if err := a.Announce(context.Background(), []Entity{temp, lux}); err != nil {
		t.Fatal(err)
	}
	if got := topics(); len(got) != 0 {
		t.Fatalf("unchanged: %v", got)
	}
	temp.Unit = "°C"
	if err := a.Announce(context.Background(), []Entity{temp}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pub.got, []published{{want[0], ""}, {want[1], pub.got[1].payload}}) || pub.got[1].payload == "" {
		t.Fatalf("change and removal: %v", pub.got)
	}
	if _, err := a.Config(Entity{Component: "light"}); err == nil {
		t.Fatal("an unknown component was announced")
	}
}
