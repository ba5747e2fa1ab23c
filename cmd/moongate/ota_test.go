package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

// The over-the-air tests run the real gateway with the embedded broker and the example
// device simulator (examples/fwdevice), each device a process of its own.

var fwdeviceOnce builtBinary

func fwdeviceBinary(t *testing.T) string {
	t.Helper()
	return fwdeviceOnce.build(t, "../../examples/fwdevice", "fwdevice")
}

// fwCLI runs a `moongate firmware` subcommand and returns its exit code and output.
func fwCLI(args ...string) (int, string) {
	var out bytes.Buffer
	code := Main(context.Background(), append([]string{"firmware"}, args...), &out, &out)
	return code, out.String()
}

type otaBench struct {
	t                *testing.T
	dir, key, broker string
	api              string
}

// signImage writes an image of size random bytes and its manifest, signed with key and
// the extra flags of `moongate firmware sign`.
func (b *otaBench) signImage(name, key, typ, version string, counter, size int, expires string, extra ...string) (image, manifest string) {
	b.t.Helper()
	image = filepath.Join(b.dir, name)
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(image, data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	args := append([]string{"sign", key + ".key", image, typ, version, "--counter", fmt.Sprint(counter), "--expires", expires}, extra...)
	if code, out := fwCLI(args...); code != 0 {
		b.t.Fatalf("sign %s: %d %s", name, code, out)
	}
	return image, image + ".manifest.json"
}

func (b *otaBench) publish(image, manifest string) (int, string) {
	return fwCLI("publish", image, manifest, "--api", b.api)
}

// device runs one fwdevice process with extra flags until it exits; it returns its exit
// code and output. otaGateway has built the binary already, so device may run on any
// goroutine.
func (b *otaBench) device(id string, counter int, extra ...string) (int, string) {
	b.t.Helper()
	args := append([]string{"-broker", b.broker, "-id", id, "-type", "esp32-env", "-version", fmt.Sprintf("0.%d", counter),
		"-counter", fmt.Sprint(counter), "-key", b.key + ".pub", "-dir", filepath.Join(b.dir, "devices", id), "-exit"}, extra...)
	return b.runDevice(id, fwdeviceBinary(b.t), args...)
}

// runDevice runs a device's command until it exits. The 90 s bound is a hang guard, not
// a timing assertion.
func (b *otaBench) runDevice(id, name string, args ...string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		b.t.Errorf("device %s did not finish:\n%s", id, out.String())
	}
	if err != nil && cmd.ProcessState == nil {
		b.t.Errorf("device %s: %v", id, err) // Errorf: devices run on goroutines of their own
		return -1, out.String()
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

const otaImageSize = 200 << 10

// otaGateway starts a gateway that trusts the key fw.pub, made in a new directory, and
// serves firmware with the given settings (YAML under firmware:).
func otaGateway(t *testing.T, firmwareSettings string) (*otaBench, *gatewayProc) {
	fwdeviceBinary(t)
	dir := t.TempDir()
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	b := &otaBench{t: t, dir: dir, key: filepath.Join(dir, "fw"), broker: fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort),
		api: fmt.Sprintf("http://127.0.0.1:%d", apiPort)}
	for _, k := range []string{"fw", "rogue"} {
		if code, out := fwCLI("keygen", filepath.Join(dir, k)); code != 0 {
			t.Fatalf("keygen: %s", out)
		}
	}
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway:
  id: ota
  data_dir: ./data
  console: {listen: 127.0.0.1:%d}
mqtt:
  embedded: {listen: 127.0.0.1:%d, acl_file: acl}
firmware:
  keys: [fw.pub]
%s`, apiPort, mqttPort, firmwareSettings), map[string]string{"acl": `pattern write moongate/devices/%c/fw/state
pattern write moongate/devices/%c/fw/get
pattern read moongate/devices/%c/fw/#
`})
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()
	return b, gw
}

func TestFirmwareOverTheAir(t *testing.T) {
	b, gw := otaGateway(t, `  store_quota: 1MiB
  chunk_size: 4KiB
  device_rate: 1MiB
  total_rate: 4MiB
`)
	dir := b.dir

	good, goodManifest := b.signImage("app-2.bin", b.key, "esp32-env", "2.0.0", 2, otaImageSize, "720h")
	if code, out := b.publish(good, goodManifest); code != 0 || !strings.Contains(out, "published esp32-env 2.0.0 (counter 2") {
		t.Fatalf("publish: %d %s", code, out)
	}

	t.Run("refused images name their reason", func(t *testing.T) {
		data, _ := os.ReadFile(good)
		tampered := filepath.Join(dir, "tampered.bin")
		data[1000] ^= 1
		os.WriteFile(tampered, data, 0o644)
		truncated := filepath.Join(dir, "truncated.bin")
		os.WriteFile(truncated, data[:otaImageSize/2], 0o644)
		// Sign a counter of its own for each, so that none is refused as a reused counter.
		_, tamperedManifest := b.signImage("t3.bin", b.key, "esp32-env", "3.0.0", 3, otaImageSize, "720h")
		_, truncatedManifest := b.signImage("t4.bin", b.key, "esp32-env", "4.0.0", 4, otaImageSize, "720h")
		expired, expiredManifest := b.signImage("t5.bin", b.key, "esp32-env", "5.0.0", 5, 1000, "2020-01-01T00:00:00Z")
		rogue, rogueManifest := b.signImage("t6.bin", filepath.Join(dir, "rogue"), "esp32-env", "6.0.0", 6, 1000, "720h")
		big, bigManifest := b.signImage("t7.bin", b.key, "esp32-cam", "1.0.0", 1, 900<<10, "720h")
		for _, c := range []struct{ name, image, manifest, want string }{
			{"tampered", tampered, tamperedManifest, "sha256 differs"},
			{"truncated", truncated, truncatedManifest, "size differs"},
			{"expired", expired, expiredManifest, "has expired"},
			{"unknown key", rogue, rogueManifest, "signature does not verify"},
			{"over the quota", big, bigManifest, "store is full"},
		} {
			if code, out := b.publish(c.image, c.manifest); code != exitFailure || !strings.Contains(out, c.want) {
				t.Errorf("%s: exit %d, %q; want exit 1 and %q", c.name, code, out, c.want)
			}
		}
		if got := listFirmware(t, b.api); len(got) != 1 || got[0] != "esp32-env 2" {
			t.Errorf("stored after the refusals: %v, want only esp32-env 2", got)
		}
	})

	t.Run("devices", func(t *testing.T) {
		type result struct {
			code int
			out  string
		}
		cases := map[string]struct {
			counter  int
			flags    []string
			wantCode int
			want     []string
		}{
			"dev-ok":      {1, nil, 0, []string{"healthy 2.0.0 counter 2", fmt.Sprintf("received %d bytes", otaImageSize)}},
			"dev-drop":    {1, []string{"-drop-at", "100000"}, 0, []string{"dropping the connection", "resumed at offset", "healthy 2.0.0 counter 2", fmt.Sprintf("received %d bytes", otaImageSize)}},
			"dev-corrupt": {1, []string{"-corrupt-at", "5000"}, 3, []string{"failed: sha256"}},
			"dev-verify":  {1, []string{"-fail-verify"}, 3, []string{"failed: signature"}},
			"dev-sick":    {1, []string{"-never-healthy", "-health-window", "100ms"}, 3, []string{"applied 2.0.0", "failed: not healthy"}},
		}
		results := map[string]result{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for id, c := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, out := b.device(id, c.counter, c.flags...)
				mu.Lock()
				results[id] = result{code, out}
				mu.Unlock()
			}()
		}
		wg.Wait()
		for id, c := range cases {
			r := results[id]
			if r.code != c.wantCode {
				t.Errorf("%s: exit %d, want %d:\n%s", id, r.code, c.wantCode, r.out)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(r.out, w) {
					t.Errorf("%s: output lacks %q:\n%s", id, w, r.out)
				}
			}
		}
	})

	t.Run("no downgrade", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := exec.CommandContext(ctx, fwdeviceBinary(t), "-broker", b.broker, "-id", "dev-new", "-type", "esp32-env",
			"-version", "9.0.0", "-counter", "9", "-key", b.key+".pub", "-dir", filepath.Join(dir, "devices", "dev-new"))
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer cancel()
		poll.Eventually(t, "the gateway says why it offers dev-new nothing", func() bool {
			return strings.Contains(gw.c.out.String(), "no downgrade") && strings.Contains(gw.c.out.String(), "device=dev-new")
		})
		if strings.Contains(out.String(), "offer") {
			t.Errorf("a device running counter 9 was offered counter 2:\n%s", out.String())
		}
	})

	t.Run("the image survives a restart", func(t *testing.T) {
		gw.stop()
		gw.start()
		if got := listFirmware(t, b.api); len(got) != 1 || got[0] != "esp32-env 2" {
			t.Fatalf("after a restart the gateway stores %v, want esp32-env 2", got)
		}
		if code, out := b.device("dev-later", 1); code != 0 || !strings.Contains(out, "healthy 2.0.0 counter 2") {
			t.Fatalf("a device after the restart: exit %d\n%s", code, out)
		}
		poll.Eventually(t, "the gateway lists dev-later as healthy on counter 2", func() bool {
			return deviceState(t, b.api, "dev-later") == "healthy 2"
		})
	})

	t.Run("a waiting device is offered a newly published image", func(t *testing.T) {
		done := make(chan string, 1)
		go func() {
			code, out := b.device("dev-waiting", 2)
			done <- fmt.Sprintf("exit %d\n%s", code, out)
		}()
		poll.Eventually(t, "dev-waiting reports idle on counter 2", func() bool {
			return deviceState(t, b.api, "dev-waiting") == "idle 2"
		})
		image, manifest := b.signImage("app-3.bin", b.key, "esp32-env", "3.0.0", 3, otaImageSize, "720h")
		if code, out := b.publish(image, manifest); code != 0 {
			t.Fatalf("publish counter 3: %d %s", code, out)
		}
		if out := <-done; !strings.HasPrefix(out, "exit 0") || !strings.Contains(out, "healthy 3.0.0 counter 3") {
			t.Fatalf("dev-waiting: %s", out)
		}
	})
}

// A download goes on where it was when the gateway is killed (its embedded broker with
// it) and started again: the device reconnects, reports its offset, and the new gateway
// offers the same image, which the device resumes without fetching a byte twice.
func TestFirmwareResumesAcrossAGatewayKill(t *testing.T) {
	out := resumeAcrossKill(t, (*otaBench).device)
	if !strings.Contains(out, "connection lost at offset") || strings.Contains(out, "resumed at offset 0\n") {
		t.Errorf("the device did not go on from where it was:\n%s", out)
	}
}

// resumeAcrossKill publishes an image to a slow gateway, runs a device with run until it
// exits, killing the gateway (kill -9) and starting it again once the device holds a
// third of the image; it checks the device completed and returns its output.
func resumeAcrossKill(t *testing.T, run func(b *otaBench, id string, counter int, extra ...string) (int, string)) string {
	const size = 96 << 10
	b, gw := otaGateway(t, `  chunk_size: 4KiB
  device_rate: 16KiB
  total_rate: 16KiB
`)
	image, manifest := b.signImage("app-2.bin", b.key, "esp32-env", "2.0.0", 2, size, "720h")
	if code, out := b.publish(image, manifest); code != 0 {
		t.Fatalf("publish: %d %s", code, out)
	}
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	go func() {
		code, out := run(b, "dev-slow", 1)
		done <- result{code, out}
	}()
	partial := filepath.Join(b.dir, "devices", "dev-slow", "download.bin")
	poll.Eventually(t, "the device holds a third of the image", func() bool {
		fi, err := os.Stat(partial)
		return err == nil && fi.Size() >= size/3
	})
	gw.kill9()
	gw.start()
	r := <-done
	if r.code != 0 {
		t.Fatalf("device: exit %d\n%s", r.code, r.out)
	}
	for _, w := range []string{"healthy 2.0.0 counter 2", fmt.Sprintf("received %d bytes", size)} {
		if !strings.Contains(r.out, w) {
			t.Errorf("device output lacks %q:\n%s", w, r.out)
		}
	}
	return r.out
}

// firmwareListing is GET /api/v1/firmware, with what the tests compare as "TYPE COUNTER"
// per image and "STATUS COUNTER" per device.
type firmwareListing struct {
	Images []struct {
		Type    string `json:"type"`
		Counter int    `json:"counter"`
	} `json:"images"`
	Devices []struct {
		Device       string `json:"device"`
		Status       string `json:"status"`
		Counter      int    `json:"counter"`
		Failed       int    `json:"failed"`
		FailedReason string `json:"failed_reason"`
	} `json:"devices"`
}

func getFirmware(t *testing.T, api string) firmwareListing {
	t.Helper()
	resp, err := http.Get(api + "/api/v1/firmware")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l firmwareListing
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return l
}

// deviceState is "STATUS COUNTER" of a device, "" when the gateway does not list it.
func deviceState(t *testing.T, api, device string) string {
	t.Helper()
	for _, d := range getFirmware(t, api).Devices {
		if d.Device == device {
			return fmt.Sprintf("%s %d", d.Status, d.Counter)
		}
	}
	return ""
}

// listFirmware is "TYPE COUNTER" of each stored image.
func listFirmware(t *testing.T, api string) []string {
	t.Helper()
	var out []string
	for _, im := range getFirmware(t, api).Images {
		out = append(out, fmt.Sprintf("%s %d", im.Type, im.Counter))
	}
	return out
}
