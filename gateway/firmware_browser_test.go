package gateway

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/firmware"
	"github.com/moongate/moongate/gateway/console/consoletest"
	"github.com/moongate/moongate/internal/poll"
)

// publishImage signs a random image of typ with priv and stores it in the gateway, as
// `moongate firmware publish` does.
func publishImage(t *testing.T, api, priv, typ, version string, counter uint64) {
	t.Helper()
	image := make([]byte, 8<<10)
	rand.Read(image)
	m, err := firmware.Sign(image, firmware.Signing{Type: typ, Version: version, Counter: counter, Expires: time.Now().Add(time.Hour)}, priv)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	w, _ := mw.CreateFormField("manifest")
	json.NewEncoder(w).Encode(m)
	w, _ = mw.CreateFormFile("image", "image.bin")
	w.Write(image)
	mw.Close()
	resp, err := http.Post(api+"/api/v1/firmware", "multipart/mixed; boundary="+mw.Boundary(), &body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish: %s", resp.Status)
	}
}

// fwState publishes a device's retained firmware state, as a device does (PROTOCOL.md).
func fwState(t *testing.T, c paho.Client, device string, counter uint64, status string, target uint64, errText string) {
	t.Helper()
	b, _ := json.Marshal(firmware.State{Type: "esp32-env", Version: fmt.Sprint(counter), Counter: counter, Status: status,
		Target: target, Error: errText})
	if tok := c.Publish("moongate/devices/"+device+"/fw/state", 1, true, b); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("state of %s: %v", device, tok.Error())
	}
}

// The Firmware tab in a real headless Chromium: a rollout's card follows the devices'
// states live (the canary healthy, the next wave open), Pause and Resume change its state,
// two failures past --max-failures 1 show it halted with the reason, and Abort, clicked
// twice, aborts it.
func TestConsoleFirmwareRolloutInBrowser(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := firmware.Keygen()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "fw.pub", pub)
	writeFile(t, dir, "acl", "pattern write moongate/devices/%c/fw/state\npattern write moongate/devices/%c/fw/get\npattern read moongate/devices/%c/fw/#\n")
	yaml := strings.Replace(baseConfig(dir, fmt.Sprintf("firmware: {keys: [%s], offer: rollout}\n", filepath.Join(dir, "fw.pub"))),
		"embedded: {listen: 127.0.0.1:0}", "embedded: {listen: 127.0.0.1:0, acl_file: "+filepath.Join(dir, "acl")+"}", 1)
	tg := startTest(t, dir, yaml)
	publishImage(t, tg.api, priv, "esp32-env", "2.0.0", 2)
	devices := map[string]paho.Client{}
	for i := range 4 {
		id := fmt.Sprintf("d%d", i)
		c := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID(id).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: %v", id, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(100) })
		devices[id] = c
		fwState(t, c, id, 1, firmware.StatusIdle, 0, "")
	}
	poll.Eventually(t, "the gateway knows the four devices", func() bool {
		d, _ := getJSON(t, tg.api+"/api/v1/firmware")["devices"].([]any)
		return len(d) == 4
	})

	b := consoletest.New(t, consoletest.Options{Timeout: 15 * time.Second})
	id := consoletest.TestID
	b.Open(tg.api + "/#/firmware")
	b.WaitText(id("fw-empty"), "No rollout yet")
	b.WaitText(id("fw-images"), "1 image · 4 devices")

	r := call(t, "POST", tg.api+"/api/v1/firmware/rollouts", "", map[string]any{"type": "esp32-env", "to": "2.0.0", "canary": 1,
		"waves": []int{50, 100}, "max_failures": "1"})
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	card := `[data-testid="rollout-card"][data-id="r1"]`
	// The pills show their words in capitals (CSS).
	status := func(device string) string {
		return card + ` [data-testid="rollout-device"][data-id="` + device + `"] [data-testid="device-status"]`
	}
	b.WaitText(card+` [data-testid="rollout-state"]`, "RUNNING")
	b.WaitText(card+` [data-testid="rollout-wave"]`, "wave canary of 3")

	// The canary applies the image and confirms it: live, with no click, the card shows
	// it healthy and the first wave open.
	fwState(t, devices["d0"], "d0", 1, firmware.StatusApplied, 2, "")
	fwState(t, devices["d0"], "d0", 2, firmware.StatusHealthy, 0, "")
	b.WaitText(status("d0"), "HEALTHY")
	b.WaitText(card+` [data-testid="rollout-wave"]`, "wave 50% of 3")
	b.WaitText(card+` [data-testid="rollout-progress"]`, "1 healthy · 0 failed · 4 devices")

	b.Click(card + ` [data-testid="rollout-pause"]`)
	b.WaitText(card+` [data-testid="rollout-state"]`, "PAUSED")
	b.Click(card + ` [data-testid="rollout-resume"]`)
	b.WaitText(card+` [data-testid="rollout-state"]`, "RUNNING")

	// Two failures of the first wave pass --max-failures 1: halted, and the card says why.
	fwState(t, devices["d1"], "d1", 1, firmware.StatusFailed, 2, "sha256 mismatch")
	b.WaitText(status("d1"), "FAILED")
	b.WaitText(card+` [data-testid="rollout-state"]`, "RUNNING")
	fwState(t, devices["d2"], "d2", 1, firmware.StatusFailed, 2, "signature does not verify")
	b.WaitText(card+` [data-testid="rollout-state"]`, "HALTED")
	b.WaitText(card+` [data-testid="rollout-reason"]`, "2 of 4 devices failed, more than --max-failures 1 allows: d1: sha256 mismatch; d2: signature does not verify")
	if n := b.Count(card + ` [data-testid="rollout-pause"], ` + card + ` [data-testid="rollout-resume"]`); n != 0 {
		t.Errorf("a halted rollout offers %d pause or resume buttons", n)
	}
	b.Screenshot("desktop-firmware-halted")

	b.Click(card + ` [data-testid="rollout-abort"]`)
	b.WaitText(card+` [data-testid="rollout-abort"]`, "Confirm abort")
	if got := getJSON(t, tg.api+"/api/v1/firmware/rollouts/r1")["state"]; got != "halted" {
		t.Fatalf("one click on Abort made the rollout %v", got)
	}
	b.Click(card + ` [data-testid="rollout-abort"]`)
	b.WaitText(card+` [data-testid="rollout-state"]`, "ABORTED")
	if got := getJSON(t, tg.api+"/api/v1/firmware/rollouts/r1")["state"]; got != "aborted" {
		t.Fatalf("the gateway says %v after Abort", got)
	}
}

func getJSON(t *testing.T, url string) map[string]any {
	t.Helper()
	r := call(t, "GET", url, "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, r.status, r.raw)
	}
	return r.body
}
