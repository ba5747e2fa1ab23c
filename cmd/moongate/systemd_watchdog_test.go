//go:build linux && (amd64 || arm64)

package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/internal/powercut"
)

const watchdogLua = `
function handle(event)
  kv.incr("n")
end
`

// Under systemd (Type=notify, WatchdogSec): READY=1 comes only once the broker and the
// console serve; WATCHDOG=1 comes every half interval while the event path is healthy,
// stops while the store's device hangs (an SD card that stops answering holds every
// commit), and comes again once it answers; STOPPING=1 at SIGTERM.
func TestWatchdogStopsWhileTheStoreHangs(t *testing.T) {
	dir := t.TempDir()
	disk, data := filepath.Join(dir, "disk"), filepath.Join(dir, "data")
	for _, d := range []string{disk, data} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pfs, err := powercut.Mount(disk, data, powercut.Options{})
	if err != nil {
		t.Fatalf("mount the power-cut filesystem (needs /dev/fuse): %v", err)
	}
	t.Cleanup(func() {
		if err := pfs.Close(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway:
  id: watchdog
  data_dir: ./data
  console: {listen: 127.0.0.1:%d}
mqtt:
  broker: embedded
  embedded: {listen: 127.0.0.1:%d}
functions:
  - name: count
    source: count.lua
    triggers: ["mqtt:dev/x@1"]
`, apiPort, mqttPort), map[string]string{"count.lua": watchdogLua})

	ns := listenNotify(t)
	const interval = 400 * time.Millisecond // pings every 200 ms
	c := launchGateway(t, dir, cfg, apiPort, []string{"NOTIFY_SOCKET=" + ns.path,
		fmt.Sprintf("WATCHDOG_USEC=%d", interval.Microseconds())})
	poll.Within(t, 60*time.Second, "READY=1", func() bool { return ns.count("READY=1") == 1 })
	// Ready means serving: both listeners answer at once, with no retry.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", mqttPort))
	if err != nil {
		t.Fatalf("READY=1 was sent before the broker serves: %v", err)
	}
	conn.Close()
	resp, err := http.Get(c.api + "/api/v1/status")
	if err != nil {
		t.Fatalf("READY=1 was sent before the console serves: %v", err)
	}
	resp.Body.Close()
	poll.Eventually(t, "three watchdog pings", func() bool { return ns.count("WATCHDOG=1") >= 3 })

	dev := paho.NewClient(paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)).SetClientID("dev"))
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer dev.Disconnect(100)

	pfs.Stall()
	acked := dev.Publish("dev/x", 1, false, `{"n": 1}`) // its commit's sync hangs
	// Once the committer is held, no ping comes: wait for the pings already on their way,
	// then watch a span of several intervals.
	time.Sleep(interval)
	before := ns.count("WATCHDOG=1")
	time.Sleep(4 * interval) // a silence is only seen by waiting
	if after := ns.count("WATCHDOG=1"); after != before {
		t.Fatalf("%d watchdog pings while the store's device hangs", after-before)
	}
	if acked.WaitTimeout(0) {
		t.Fatal("the QoS 1 message was acknowledged before its commit was synced")
	}

	pfs.Resume()
	if !acked.WaitTimeout(10*time.Second) || acked.Error() != nil {
		t.Fatalf("no PUBACK once the device answers again: %v", acked.Error())
	}
	stalled := ns.count("WATCHDOG=1")
	poll.Eventually(t, "the pings to resume", func() bool { return ns.count("WATCHDOG=1") >= stalled+2 })

	c.stop(t)
	if ns.count("STOPPING=1") != 1 {
		t.Fatalf("no STOPPING=1 at SIGTERM; got %q", ns.lines())
	}
	if !strings.Contains(c.out.String(), "health check failed") || !strings.Contains(c.out.String(), "healthy again") {
		t.Errorf("the log does not say the watchdog stopped and resumed:\n%s", c.out.String())
	}
}
