package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moongate/moongate/internal/poll"
)

// startDevice runs an fwdevice process in the background until the test ends.
func (b *otaBench) startDevice(id string, extra ...string) *syncBuffer {
	b.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"-broker", b.broker, "-id", id, "-type", "esp32-env", "-version", "0.1", "-counter", "1",
		"-key", b.key + ".pub", "-dir", filepath.Join(b.dir, "devices", id)}, extra...)
	cmd := exec.CommandContext(ctx, fwdeviceBinary(b.t), args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	return &out
}

// A device that applies an image and never reports healthy fails the attempt at the
// gateway when the manifest's health window passes: logged, counted, listed, and the
// image is not offered to that device again, also after a gateway restart.
func TestFirmwareHealthWindow(t *testing.T) {
	b, gw := otaGateway(t, `  chunk_size: 4KiB
  device_rate: 1MiB
  total_rate: 4MiB
`)
	image, manifest := b.signImage("app-2.bin", b.key, "esp32-env", "2.0.0", 2, 64<<10, "720h", "--health-window", "1s")
	if code, out := b.publish(image, manifest); code != 0 {
		t.Fatalf("publish: %d %s", code, out)
	}
	// The device's own window is far longer than the manifest's: only the gateway can
	// call the attempt failed.
	sick := b.startDevice("dev-sick", "-never-healthy", "-health-window", "1h")
	poll.Eventually(t, "the gateway lists dev-sick as failed with counter 2", func() bool {
		for _, d := range getFirmware(t, b.api).Devices {
			if d.Device == "dev-sick" && d.Failed == 2 && strings.Contains(d.FailedReason, "not healthy within 1s") {
				return true
			}
		}
		return false
	})
	if !strings.Contains(sick.String(), "applied 2.0.0") {
		t.Fatalf("dev-sick did not apply the image:\n%s", sick.String())
	}
	if log := gw.c.out.String(); !strings.Contains(log, "did not report healthy within the health window") || !strings.Contains(log, "device=dev-sick") {
		t.Errorf("the gateway did not log the failed attempt:\n%s", log)
	}
	if got := gw.metric("moongate_firmware_not_healthy_total"); got != 1 {
		t.Errorf("moongate_firmware_not_healthy_total = %v, want 1", got)
	}

	// The device reboots into its old image; the gateway restarts too. Neither may bring
	// back the offer of the image the device failed with.
	gw.stop()
	gw.start()
	later := b.startDevice("dev-sick")
	poll.Eventually(t, "the restarted gateway says it does not offer dev-sick the image it failed with", func() bool {
		log := gw.c.out.String()
		return strings.Contains(log, "not offering the image this device failed with") && strings.Contains(log, "device=dev-sick")
	})
	if strings.Contains(later.String(), "offered") {
		t.Errorf("dev-sick was offered counter 2 again after the restart:\n%s", later.String())
	}
	if got := deviceState(t, b.api, "dev-sick"); got != "idle 1" {
		t.Errorf("the gateway lists dev-sick as %q, want idle 1", got)
	}
}
