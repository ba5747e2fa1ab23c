package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/mosquittotest"
	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/mqtt"
)

// deviceConfig is a gateway whose embedded broker takes the user kitchen (password
// k-pass) and lets each device write only its own sensors/USER/# topics; broker adds
// settings of mqtt.embedded (", device_rate: 2").
func deviceConfig(t *testing.T, dir, broker string) string {
	t.Helper()
	if err := mqtt.SetPassword(filepath.Join(dir, "passwd"), "kitchen", "k-pass"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "acl", "pattern write sensors/%u/#\n")
	return strings.Replace(baseConfig(dir, ""), "embedded: {listen: 127.0.0.1:0}",
		"embedded: {listen: 127.0.0.1:0, password_file: passwd, acl_file: acl"+broker+"}", 1)
}

// connectDevice connects the user kitchen as clientID; lost is closed when the broker
// ends the connection.
func connectDevice(t *testing.T, broker, clientID string) (c paho.Client, lost chan struct{}) {
	t.Helper()
	lost = make(chan struct{})
	c = paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetUsername("kitchen").SetPassword("k-pass").SetAutoReconnect(false).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) }))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("device %s connect: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, lost
}

func devicePublish(t *testing.T, c paho.Client, topic string) {
	t.Helper()
	if tok := c.Publish(topic, 1, false, `{"temp": 21}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// listedDevices is GET /api/v1/devices, by client id.
func listedDevices(t *testing.T, tg *testGateway) (map[string]map[string]any, apiResult) {
	t.Helper()
	r := call(t, "GET", tg.api+"/api/v1/devices", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET devices: %d %s", r.status, r.raw)
	}
	byID := map[string]map[string]any{}
	for _, d := range r.body["devices"].([]any) {
		byID[d.(map[string]any)["client_id"].(string)] = d.(map[string]any)
	}
	return byID, r
}

// The devices API lists the embedded broker's devices with their user, address and
// counters (a publish the ACL refuses counts as denied), and disconnects one on request.
func TestDevicesAPI(t *testing.T) {
	dir := t.TempDir()
	tg := startTest(t, dir, deviceConfig(t, dir, ""))

	if _, r := listedDevices(t, tg); r.raw != `{"devices":[],"broker":"embedded"}`+"\n" {
		t.Fatalf("with no device connected: %s", r.raw)
	}
	kitchen, lost := connectDevice(t, tg.broker, "kitchen-1")
	// The broker has set up kitchen-1's session once it answers a packet after CONNACK;
	// an UNSUBSCRIBE is one that neither the ACL nor the fair share looks at.
	if tok := kitchen.Unsubscribe("nothing"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("unsubscribe: %v", tok.Error())
	}
	connected := time.Now() // kitchen-1 connected before this, and was never listed
	// A client id is any string: one with a slash and a space is one path segment, escaped.
	const oddID = "lab/probe 1"
	connectDevice(t, tg.broker, oddID)
	for range 3 {
		devicePublish(t, kitchen, "sensors/kitchen/temp")
	}
	devicePublish(t, kitchen, "sensors/hall/temp") // acknowledged and dropped: not its topic

	devs, r := listedDevices(t, tg)
	d := devs["kitchen-1"]
	if len(devs) != 2 || d == nil || devs[oddID] == nil {
		t.Fatalf("devices: %s", r.raw)
	}
	if d["user"] != "kitchen" || d["listener"] != "tcp" || !strings.HasPrefix(d["remote"].(string), "127.0.0.1:") ||
		d["received"] != float64(4) || d["denied"] != float64(1) || d["slowed"] != float64(0) {
		t.Errorf("kitchen-1: %v", d)
	}
	if at, err := time.Parse(time.RFC3339Nano, d["connected_at"].(string)); err != nil || at.After(connected) || at.Location() != time.UTC {
		t.Errorf("connected_at %v, want before %v (when the device had connected), in UTC: %v", d["connected_at"], connected, err)
	}
	if _, ok := d["rate"].(float64); !ok {
		t.Errorf("rate: %v", d["rate"])
	}

	disconnect := func(id string) apiResult {
		return call(t, "POST", tg.api+"/api/v1/devices/"+url.PathEscape(id)+"/disconnect", "", nil)
	}
	// A page of another origin cannot disconnect a device through the user's browser.
	req, _ := http.NewRequest("POST", tg.api+"/api/v1/devices/kitchen-1/disconnect", nil)
	req.Header.Set("Origin", "http://attacker.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a cross-origin disconnect: %d, want 403", resp.StatusCode)
	}
	if !kitchen.IsConnectionOpen() {
		t.Fatal("a cross-origin request disconnected the device")
	}
	if r := disconnect("nobody"); r.status != http.StatusNotFound || r.body["error"] != `no device "nobody" is connected` {
		t.Fatalf("disconnect of a device not connected: %d %s", r.status, r.raw)
	}
	if r := disconnect("kitchen-1"); r.status != http.StatusNoContent {
		t.Fatalf("disconnect: %d %s", r.status, r.raw)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the device did not see its connection end")
	}
	poll.Eventually(t, "kitchen-1 gone from the list", func() bool {
		devs, _ := listedDevices(t, tg)
		return devs["kitchen-1"] == nil && devs[oddID] != nil
	})
	if r := disconnect(oddID); r.status != http.StatusNoContent {
		t.Fatalf("disconnect %q: %d %s", oddID, r.status, r.raw)
	}
	poll.Eventually(t, "no device left", func() bool { devs, _ := listedDevices(t, tg); return len(devs) == 0 })
}

// On an external broker the gateway is one client among others: it has no device list
// and says so, and refuses to disconnect.
func TestDevicesAPIExternalBroker(t *testing.T) {
	m := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
	dir := t.TempDir()
	cfg := strings.Replace(baseConfig(dir, ""), "  broker: embedded\n  embedded: {listen: 127.0.0.1:0}\n",
		fmt.Sprintf("  broker: %s\n", m.URL), 1)
	tg := startTest(t, dir, cfg)
	if _, r := listedDevices(t, tg); r.raw != `{"devices":[],"broker":"external"}`+"\n" {
		t.Fatalf("on an external broker: %s", r.raw)
	}
	r := call(t, "POST", tg.api+"/api/v1/devices/kitchen-1/disconnect", "", nil)
	if r.status != http.StatusConflict || r.body["error"] == nil {
		t.Fatalf("disconnect on an external broker: %d %s", r.status, r.raw)
	}
}
