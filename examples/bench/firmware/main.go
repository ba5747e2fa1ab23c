// Command firmware measures over-the-air updates on the real gateway binary, its embedded
// broker and examples/fwdevice processes over TCP (make bench-firmware):
//
//   - transfer: an image of -size to 1 device, then to -many devices at once, each device
//     pulling it chunk by chunk as PROTOCOL.md says; the time until every device is
//     healthy, the gateway's CPU time and its peak RSS (VmHWM) over the run;
//   - rollout: -rollout devices, one rollout with the default settings (one wave, 100%),
//     the time from `moongate firmware rollout create` to the rollout done.
//
// Each run has a gateway of its own with the default firmware settings unless -settings
// says otherwise (chunk_size 16KiB, device_rate 64KiB/s, total_rate 512KiB/s: the time is
// mostly theirs, by design).
package main

import (
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moongate/moongate/examples/bench/benchproc"
)

func main() {
	moongate := flag.String("moongate", "bin/moongate", "the gateway binary")
	size := flag.Int("size", 1<<20, "image bytes")
	many := flag.Int("many", 50, "devices updating at once in the second transfer run")
	rollout := flag.Int("rollout", 10, "devices of the rollout run (0: skip it)")
	settings := flag.String("settings", "", "extra YAML under firmware:, indented two spaces (e.g. '  total_rate: 4MiB')")
	flag.Parse()
	dir, err := os.MkdirTemp("", "moongate-bench-firmware-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	fwdevice := filepath.Join(dir, "fwdevice")
	if out, err := exec.Command("go", "build", "-o", fwdevice, "./examples/fwdevice").CombinedOutput(); err != nil {
		log.Fatalf("build fwdevice: %v\n%s", err, out)
	}
	bin, err := filepath.Abs(*moongate) // the runs work in directories of their own
	if err != nil {
		log.Fatal(err)
	}
	b := &bench{moongate: bin, fwdevice: fwdevice, size: *size, settings: *settings}
	fmt.Printf("image %d bytes; firmware settings: defaults%s\n", *size, strings.ReplaceAll(*settings, "\n", " "))
	fmt.Printf("%-22s %8s %8s %10s %12s\n", "run", "devices", "time", "gw cpu", "gw peak RSS")
	for _, n := range []int{1, *many} {
		r, err := b.transfer(filepath.Join(dir, "t"+strconv.Itoa(n)), n, false)
		if err != nil {
			log.Fatal(err)
		}
		r.print("transfer")
	}
	if *rollout > 0 {
		r, err := b.transfer(filepath.Join(dir, "rollout"), *rollout, true)
		if err != nil {
			log.Fatal(err)
		}
		r.print("rollout, to all healthy")
	}
}

type bench struct {
	moongate, fwdevice string
	size               int
	settings           string
}

type result struct {
	devices int
	took    time.Duration
	cpu     time.Duration
	rss     int64
}

func (r result) print(name string) {
	fmt.Printf("%-22s %8d %7.1fs %9.2fs %9.1f MiB\n", name, r.devices, r.took.Seconds(), r.cpu.Seconds(), float64(r.rss)/(1<<20))
}

// transfer starts a gateway, publishes the image and updates n devices: at once, or
// through a rollout created once all of them report.
func (b *bench) transfer(dir string, n int, byRollout bool) (result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	cli := func(args ...string) error {
		cmd := exec.Command(b.moongate, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("moongate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := cli("firmware", "keygen", "fw"); err != nil {
		return result{}, err
	}
	image := make([]byte, b.size)
	rand.Read(image)
	if err := os.WriteFile(filepath.Join(dir, "app.bin"), image, 0o644); err != nil {
		return result{}, err
	}
	if err := cli("firmware", "sign", "fw.key", "app.bin", "bench", "2.0.0", "--counter", "2"); err != nil {
		return result{}, err
	}
	mqttAddr, apiAddr := benchproc.FreeAddr(), benchproc.FreeAddr()
	offer := ""
	if byRollout {
		offer = "  offer: rollout\n"
	}
	cfg := fmt.Sprintf(`gateway:
  id: bench
  data_dir: ./data
  console: {listen: %s}
mqtt:
  embedded: {listen: %s, acl_file: acl}
firmware:
  keys: [fw.pub]
  store_quota: 256MiB
%s%s
`, apiAddr, mqttAddr, offer, b.settings)
	acl := "pattern write moongate/devices/%c/fw/state\npattern write moongate/devices/%c/fw/get\npattern read moongate/devices/%c/fw/#\n"
	for name, content := range map[string]string{"moongate.yaml": cfg, "acl": acl} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return result{}, err
		}
	}
	gw, err := benchproc.Start(dir, "gateway", b.moongate, "run", "-c", "moongate.yaml")
	if err != nil {
		return result{}, err
	}
	defer gw.Stop()
	if err := benchproc.WaitListening(gw, apiAddr); err != nil {
		return result{}, err
	}
	api := "http://" + apiAddr
	if err := cli("firmware", "publish", "app.bin", "app.bin.manifest.json", "--api", api); err != nil {
		return result{}, err
	}
	cpu0 := gw.CPU()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		id := fmt.Sprintf("dev-%03d", i)
		d := exec.Command(b.fwdevice, "-broker", "tcp://"+mqttAddr, "-id", id, "-type", "bench", "-version", "1.0.0",
			"-counter", "1", "-key", filepath.Join(dir, "fw.pub"), "-dir", filepath.Join(dir, "devices", id), "-exit")
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := d.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("device %s: %v\n%s", id, err, out)
			}
		}()
	}
	if byRollout {
		if err := waitDevices(api, n); err != nil {
			return result{}, err
		}
		if err := cli("firmware", "rollout", "create", "--type", "bench", "--to", "2.0.0", "--api", api); err != nil {
			return result{}, err
		}
		cpu0, start = gw.CPU(), time.Now()
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		return result{}, err
	}
	return result{devices: n, took: took, cpu: gw.CPU() - cpu0, rss: gw.PeakRSS()}, nil
}

// waitDevices waits until the gateway lists n devices (each reported its state).
func waitDevices(api string, n int) error {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(api + "/api/v1/firmware")
		if err != nil {
			continue
		}
		var l struct {
			Devices []json.RawMessage `json:"devices"`
		}
		err = json.NewDecoder(resp.Body).Decode(&l)
		resp.Body.Close()
		if err == nil && len(l.Devices) >= n {
			return nil
		}
	}
	return fmt.Errorf("the gateway did not list %d devices within a minute", n)
}
