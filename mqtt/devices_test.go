package mqtt

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/poll"
)

// The broker lists its devices with their counters and disconnects one on request.
func TestDevicesListAndDisconnect(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "passwd")
	if err := SetPassword(pw, "kitchen", "k-pass"); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{PasswordFile: pw}, []Subscription{{"sensors/#", 0}}, rec)
	c := device(t, "tcp://"+e.Addr(), func(o *paho.ClientOptions) {
		o.SetUsername("kitchen").SetPassword("k-pass").SetClientID("kitchen-1").SetAutoReconnect(false)
	})
	for range 3 {
		wait(t, c.Publish("sensors/kitchen/temp", 0, false, "21"))
		rec.next(t)
	}
	ds := e.Devices()
	if len(ds) != 1 || ds[0].ClientID != "kitchen-1" || ds[0].User != "kitchen" || ds[0].Received != 3 || ds[0].Listener != "tcp" {
		t.Fatalf("devices: %+v", ds)
	}
	if err := e.DisconnectDevice("nobody"); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("disconnect of an unknown device: %v", err)
	}
	if err := e.DisconnectDevice("kitchen-1"); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, "the device disconnected", func() bool { return !c.IsConnectionOpen() && len(e.Devices()) == 0 })
}

// A device publishing past its share waits; a device within its share does not.
func TestDeviceRateShare(t *testing.T) {
	rec := newRecorder()
	go func() {
		for m := range rec.ch {
			m.Ack()
		}
	}()
	e := startEmbedded(t, EmbeddedOptions{DeviceRate: 100}, []Subscription{{"sensors/#", 1}}, rec)
	flood := device(t, "tcp://"+e.Addr(), func(o *paho.ClientOptions) { o.SetClientID("flood") })
	calm := device(t, "tcp://"+e.Addr(), func(o *paho.ClientOptions) { o.SetClientID("calm") })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 300 {
			flood.Publish("sensors/flood/temp", 0, false, "x")
		}
	}()
	for range 5 {
		wait(t, calm.Publish("sensors/calm/temp", 1, false, "x"))
		time.Sleep(20 * time.Millisecond)
	}
	<-done
	slowed := map[string]uint64{}
	poll.Eventually(t, "the flood counted", func() bool {
		for _, d := range e.Devices() {
			slowed[d.ClientID] = d.Slowed
		}
		return slowed["flood"] > 0
	})
	if slowed["calm"] != 0 {
		t.Fatalf("the calm device was slowed %d times", slowed["calm"])
	}
}

// The gateway's own publishes are no device's: they take no share and are never held,
// however many a function sends.
func TestGatewayPublishesAreNotPaced(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{DeviceRate: 1}, []Subscription{{"out/#", 0}}, rec)
	for range 3 {
		if err := e.Publish(context.Background(), "out/x", []byte("x"), 0, false); err != nil {
			t.Fatal(err)
		}
		rec.next(t)
	}
	paced := 0
	e.devices.Range(func(any, any) bool { paced++; return true })
	if paced != 0 {
		t.Fatalf("the broker keeps a fair share for %d clients, want none: the gateway's own is not a device", paced)
	}
}
