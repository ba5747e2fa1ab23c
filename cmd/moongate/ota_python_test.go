package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moongate/moongate/internal/poll"
)

// The Python device (examples/fwdevice-py) is written from firmware/PROTOCOL.md alone; the
// test runs it against the real gateway, so the protocol document is checked to be enough
// to build a device. It is never skipped: CI installs its Debian packages (.ci/run).

// debianPython is the interpreter that sees Debian's python3-* packages: /usr/bin/python3
// when there is one (a python3 of pyenv or a venv earlier on PATH does not see them).
func debianPython(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			t.Fatal("the Python device test needs python3 with python3-paho-mqtt and python3-nacl (apt-get install python3-paho-mqtt python3-nacl; .ci/run installs them)")
		}
	}
	if out, err := exec.Command(py, "-c", "import paho.mqtt.client, nacl.signing").CombinedOutput(); err != nil {
		t.Fatalf("%s lacks the Python device's modules (apt-get install python3-paho-mqtt python3-nacl; .ci/run installs them): %v\n%s", py, err, out)
	}
	return py
}

// pyDevice runs examples/fwdevice-py until it exits, like otaBench.device.
func (b *otaBench) pyDevice(py, id string, counter int, extra ...string) (int, string) {
	b.t.Helper()
	args := append([]string{"../../examples/fwdevice-py/fwdevice.py", "--broker", b.broker, "--id", id, "--type", "esp32-env",
		"--version", fmt.Sprintf("0.%d", counter), "--counter", fmt.Sprint(counter), "--key", b.key + ".pub",
		"--dir", filepath.Join(b.dir, "devices", id), "--exit"}, extra...)
	return b.runDevice(id, py, args...)
}

func TestFirmwarePythonDevice(t *testing.T) {
	py := debianPython(t)
	b, _ := otaGateway(t, `  chunk_size: 4KiB
  device_rate: 1MiB
  total_rate: 4MiB
`)
	image, manifest := b.signImage("app-2.bin", b.key, "esp32-env", "2.0.0", 2, otaImageSize, "720h")
	if code, out := b.publish(image, manifest); code != 0 {
		t.Fatalf("publish: %d %s", code, out)
	}

	t.Run("completes an update, resuming after a drop", func(t *testing.T) {
		code, out := b.pyDevice(py, "py-ok", 1, "--drop-at", "100000")
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		for _, w := range []string{"dropping the connection", "healthy 2.0.0 counter 2", fmt.Sprintf("received %d bytes", otaImageSize)} {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
		if strings.Contains(out, "connection lost at offset 0,") || !strings.Contains(out, "connection lost at offset") {
			t.Errorf("the device did not go on from where it was after the drop:\n%s", out)
		}
		// The device exits once its report is sent; the gateway takes it in after.
		poll.Eventually(t, "the gateway lists py-ok as healthy on counter 2", func() bool {
			return deviceState(t, b.api, "py-ok") == "healthy 2"
		})
	})

	t.Run("refuses an image its key did not sign", func(t *testing.T) {
		// The gateway trusts fw.pub; this device trusts only rogue.pub, so the
		// signature check (not the gateway) must stop it.
		code, out := b.pyDevice(py, "py-rogue", 1, "--key", filepath.Join(b.dir, "rogue.pub"))
		if code != 3 || !strings.Contains(out, "failed: signature") || strings.Contains(out, "applied") {
			t.Fatalf("exit %d, want 3 and failed: signature before applying:\n%s", code, out)
		}
	})
}

// The Python device goes on where it was when the gateway is killed mid-download and
// started again, as TestFirmwareResumesAcrossAGatewayKill checks for the Go device.
func TestFirmwarePythonDeviceResumesAcrossAGatewayKill(t *testing.T) {
	py := debianPython(t)
	out := resumeAcrossKill(t, func(b *otaBench, id string, counter int, extra ...string) (int, string) {
		return b.pyDevice(py, id, counter, extra...)
	})
	if !strings.Contains(out, "connection lost at offset") || strings.Contains(out, "connection lost at offset 0,") ||
		strings.Count(out, "downloading from offset 0\n") > 1 {
		t.Errorf("the device did not go on from where it was:\n%s", out)
	}
}
