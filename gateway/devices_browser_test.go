package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moongate/moongate/gateway/console/consoletest"
	"github.com/moongate/moongate/internal/mosquittotest"
)

// The Devices tab in a real headless Chromium against a real gateway whose broker takes
// passwords and ACLs: a device that connects shows with its user and counters, a publish
// the ACL refuses shows as denied and publishes past its share as slowed (both
// highlighted), and Disconnect, once confirmed, ends the device's connection and its card
// goes.
func TestConsoleDevicesInBrowser(t *testing.T) {
	dir := t.TempDir()
	// Two publishes a second: the third of a burst of four waits for its share.
	tg := startTest(t, dir, deviceConfig(t, dir, ", device_rate: 2"))
	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	id := consoletest.TestID
	card := `[data-testid="device-card"][data-id="kitchen-1"]`

	b.Open(tg.api + "/#/devices")
	b.WaitText(id("device-empty"), "No device is connected")

	kitchen, lost := connectDevice(t, tg.broker, "kitchen-1")
	for range 3 {
		devicePublish(t, kitchen, "sensors/kitchen/temp")
	}
	devicePublish(t, kitchen, "sensors/hall/temp") // not its topic: the ACL refuses it
	connectDevice(t, tg.broker, "kitchen-2")

	// The tab refreshes by itself: no click brings the devices or their counters.
	b.WaitVisible(card)
	b.WaitText(card+` [data-testid="device-user"]`, "kitchen")
	b.WaitText(card+` [data-testid="device-received"]`, "4")
	b.WaitText(card+` [data-testid="device-denied"]`, "1")
	b.WaitVisible(card + ` [data-testid="device-denied"].bad`)
	b.WaitVisible(card + ` [data-testid="device-slowed"].warn`)
	calm := `[data-testid="device-card"][data-id="kitchen-2"]`
	b.WaitVisible(calm)
	if n := b.Count(calm + ` .bad, ` + calm + ` .warn`); n != 0 {
		t.Errorf("kitchen-2 denied and slowed nothing, yet %d of its counts are highlighted: %q", n, b.Text(calm))
	}
	if remote := b.Text(card + ` [data-testid="device-remote"]`); !strings.HasPrefix(remote, "127.0.0.1:") {
		t.Errorf("address reads %q", remote)
	}
	b.WaitText(card+` [data-testid="device-since"]`, "connected ")
	b.WaitText(id("device-count"), "2 devices")
	shot := b.Screenshot("desktop-devices")

	// Cancel leaves the device connected.
	b.Click(card + ` [data-testid="device-disconnect"]`)
	b.WaitText(id("disconnect-name"), "kitchen-1")
	b.Screenshot("desktop-devices-confirm")
	b.Click(id("disconnect-cancel"))
	b.WaitGone(id("disconnect-dialog"))
	time.Sleep(300 * time.Millisecond) // a disconnect, had one been sent, would be under way
	if !kitchen.IsConnectionOpen() {
		t.Fatal("Cancel disconnected the device")
	}

	b.Click(card + ` [data-testid="device-disconnect"]`)
	b.Click(id("disconnect-confirm"))
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the device did not see its connection end")
	}
	b.WaitGone(card)
	b.WaitText(id("device-count"), "1 device")
	if n := b.Count(`[data-testid="device-card"]`); n != 1 {
		t.Errorf("%d cards after the disconnect, want kitchen-2's only", n)
	}

	b.Viewport(390, 844, true)
	b.Open(tg.api + "/#/devices")
	b.WaitVisible(`[data-testid="device-card"][data-id="kitchen-2"]`)
	b.Screenshot("phone-devices")
	if w := b.Eval(`String(document.documentElement.scrollWidth)`); w != "390" {
		t.Errorf("the phone page is %s px wide: it scrolls sideways", w)
	}
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("errors in the page: %q", errs)
	}
	t.Logf("screenshot: %s", shot)
}

// On an external broker the Devices tab says why it lists nothing.
func TestConsoleDevicesExternalBroker(t *testing.T) {
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	dir := t.TempDir()
	tg := startTest(t, dir, strings.Replace(baseConfig(dir, ""), "  broker: embedded\n  embedded: {listen: 127.0.0.1:0}\n",
		fmt.Sprintf("  broker: %s\n", m.URL), 1))
	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	b.Open(tg.api + "/#/devices")
	b.WaitText(consoletest.TestID("device-empty"), "An external broker: its devices are not listed here")
	b.Screenshot("desktop-devices-external")
}
