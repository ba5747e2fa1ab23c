package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moongate/moongate/firmware"
	"github.com/moongate/moongate/internal/poll"
)

// The rollout tests run the real gateway, its embedded broker and fwdevice processes, and
// drive the rollout with the CLI, as an operator would.

const rolloutSettings = `  chunk_size: 4KiB
  device_rate: 1MiB
  total_rate: 8MiB
  offer: rollout
`

func getRollout(t *testing.T, api, id string) firmware.Rollout {
	t.Helper()
	resp, err := http.Get(api + "/api/v1/firmware/rollouts/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r firmware.Rollout
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// publishForRollout publishes esp32-env 2.0.0 (counter 2) and checks that, with
// firmware.offer: rollout, the running devices are offered nothing by the publish itself.
func (b *otaBench) publishForRollout(devices map[string]*syncBuffer) {
	b.t.Helper()
	for id := range devices {
		poll.Eventually(b.t, id+" reports idle on counter 1", func() bool { return deviceState(b.t, b.api, id) == "idle 1" })
	}
	image, manifest := b.signImage("app-2.bin", b.key, "esp32-env", "2.0.0", 2, 64<<10, "720h")
	if code, out := b.publish(image, manifest); code != 0 {
		b.t.Fatalf("publish: %d %s", code, out)
	}
}

// A canary that fails halts the rollout, with the reason, before any wave: no other
// device is offered the image.
func TestFirmwareRolloutCanaryHalts(t *testing.T) {
	b, _ := otaGateway(t, rolloutSettings)
	devices := map[string]*syncBuffer{"a-canary": b.startDevice("a-canary", "-fail-verify")}
	for i := range 4 {
		id := fmt.Sprintf("b%d", i)
		devices[id] = b.startDevice(id)
	}
	b.publishForRollout(devices)
	code, out := fwCLI("rollout", "create", "--type", "esp32-env", "--to", "2.0.0", "--canary", "1", "--waves", "50%,100%", "--max-failures", "2", "--api", b.api)
	if code != 0 || !strings.Contains(out, "rollout r1: esp32-env 2.0.0 (counter 2)") {
		t.Fatalf("rollout create: %d\n%s", code, out)
	}
	var r firmware.Rollout
	poll.Eventually(t, "the rollout halts on its failed canary", func() bool {
		r = getRollout(t, b.api, "r1")
		return r.State == firmware.RolloutHalted
	})
	if !strings.Contains(r.Reason, "the canary failed, so no wave started: a-canary: ") || r.Wave != 0 {
		t.Errorf("halted at wave %d with reason %q", r.Wave, r.Reason)
	}
	for id, out := range devices {
		if id != "a-canary" && strings.Contains(out.String(), "offered") {
			t.Errorf("%s was offered the image by a rollout whose canary failed:\n%s", id, out.String())
		}
	}
	if code, out := fwCLI("rollout", "status", "r1", "--api", b.api); code != 0 || !strings.Contains(out, "state halted, wave canary") ||
		!strings.Contains(out, "reason: the canary failed") {
		t.Errorf("rollout status: %d\n%s", code, out)
	}
	// Halted, the rollout is not resumed; aborted, it still offers nothing.
	if code, out := fwCLI("rollout", "resume", "r1", "--api", b.api); code != exitFailure || !strings.Contains(out, "cannot become running") {
		t.Errorf("resume of a halted rollout: %d %s", code, out)
	}
	if code, out := fwCLI("rollout", "abort", "r1", "--api", b.api); code != 0 || !strings.Contains(out, "state aborted") {
		t.Errorf("abort: %d %s", code, out)
	}
}

// A rollout goes on where it was after the gateway is killed mid-rollout: the waves
// opened stay open, the devices healthy stay counted, and the rest are offered the image
// once they report again. A device that appears afterwards is taken in too.
func TestFirmwareRolloutSurvivesAGatewayKill(t *testing.T) {
	b, gw := otaGateway(t, rolloutSettings)
	devices := map[string]*syncBuffer{}
	for i := range 6 {
		id := fmt.Sprintf("dev-%d", i)
		devices[id] = b.startDevice(id)
	}
	b.publishForRollout(devices)
	if code, out := fwCLI("rollout", "create", "--type", "esp32-env", "--to", "2", "--from", "1", "--canary", "1",
		"--waves", "40%,100%", "--max-failures", "1", "--api", b.api); code != 0 {
		t.Fatalf("rollout create: %d\n%s", code, out)
	}
	poll.Eventually(t, "the canary is healthy and the first wave open", func() bool {
		r := getRollout(t, b.api, "r1")
		return r.Wave >= 1 && r.Devices["dev-0"].Status == firmware.StatusHealthy
	})
	t.Cleanup(func() {
		if t.Failed() {
			for id, out := range devices {
				t.Logf("%s:\n%s", id, out.String())
			}
		}
	})
	before := getRollout(t, b.api, "r1")
	gw.kill9()
	gw.start()
	after := getRollout(t, b.api, "r1")
	if after.Wave < before.Wave || after.Devices["dev-0"].Status != firmware.StatusHealthy || len(after.Devices) != 6 {
		t.Fatalf("after the kill the rollout is at wave %d with %+v; before it was at wave %d", after.Wave, after.Devices, before.Wave)
	}
	var r firmware.Rollout
	// The devices reconnect to the new gateway's broker with their own backoff.
	poll.Within(t, time.Minute, "the rollout is done", func() bool {
		r = getRollout(t, b.api, "r1")
		return r.State == firmware.RolloutDone || r.State == firmware.RolloutHalted
	})
	if r.State != firmware.RolloutDone {
		t.Fatalf("rollout %s: %s", r.State, r.Reason)
	}
	for id, out := range devices {
		poll.Eventually(t, id+" says it is healthy", func() bool { return strings.Contains(out.String(), "healthy 2.0.0 counter 2") })
		if r.Devices[id].Status != firmware.StatusHealthy {
			t.Errorf("%s is %s in the rollout:\n%s", id, r.Devices[id].Status, out.String())
		}
	}
	late := b.startDevice("dev-late")
	poll.Eventually(t, "a device that appears after the rollout is updated by it", func() bool {
		d := getRollout(t, b.api, "r1").Devices["dev-late"]
		return d != nil && d.Status == firmware.StatusHealthy && strings.Contains(late.String(), "healthy 2.0.0 counter 2")
	})
	// Outside the rollout's counters: not taken in, not offered.
	other := b.startDevice("dev-old", "-counter", "0", "-version", "0.0")
	poll.Eventually(t, "dev-old reports idle on counter 0", func() bool { return deviceState(t, b.api, "dev-old") == "idle 0" })
	if d := getRollout(t, b.api, "r1").Devices["dev-old"]; d != nil || strings.Contains(other.String(), "offered") {
		t.Errorf("a device on counter 0 was taken in by a rollout --from 1: %+v\n%s", d, other.String())
	}
}
