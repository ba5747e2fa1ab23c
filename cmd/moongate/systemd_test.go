package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/internal/powercut"
)

// notifySocket stands in for systemd: it receives what the gateway sends to
// NOTIFY_SOCKET, one datagram a message.
type notifySocket struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	got  []string // every state line, in order
	wake chan struct{}
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// A short path: sun_path holds 108 bytes, and t.TempDir's can be longer.
	dir, err := os.MkdirTemp("", "mg-notify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ns := &notifySocket{path: filepath.Join(dir, "notify"), wake: make(chan struct{}, 1)}
	ns.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := ns.conn.Read(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			ns.got = append(ns.got, strings.Split(strings.TrimSpace(string(buf[:n])), "\n")...)
			ns.mu.Unlock()
			select {
			case ns.wake <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { ns.conn.Close(); <-done })
	return ns
}

// count is how many lines equal to state arrived.
func (ns *notifySocket) count(state string) int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n := 0
	for _, l := range ns.got {
		if l == state {
			n++
		}
	}
	return n
}

func (ns *notifySocket) lines() []string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]string(nil), ns.got...)
}

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
	mqttPort, apiPort := freePort(t), freePort(t)
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

// Under the journal (JOURNAL_STREAM names stderr), lines carry no time of their own: the
// journal stamps each; anywhere else they do.
func TestJournalLinesHaveNoTimestamp(t *testing.T) {
	dir := t.TempDir()
	apiPort, mqttPort := freePort(t), freePort(t)
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway:
  data_dir: ./data
  console: {listen: 127.0.0.1:%d}
mqtt:
  embedded: {listen: 127.0.0.1:%d}
`, apiPort, mqttPort), nil)
	for _, journal := range []bool{true, false} {
		logFile, err := os.Create(filepath.Join(dir, fmt.Sprintf("stderr-%v", journal)))
		if err != nil {
			t.Fatal(err)
		}
		fi, err := logFile.Stat()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(gatewayBinary(t), "run", "-c", cfg)
		cmd.Dir, cmd.Stderr = dir, logFile
		cmd.Env = os.Environ()
		if journal {
			cmd.Env = append(cmd.Env, "JOURNAL_STREAM="+journalStream(fi))
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		read := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
		poll.Within(t, 60*time.Second, "the start line", func() bool { return strings.Contains(read(), "moongate started") })
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logFile.Close()
		if stamped := strings.Contains(read(), "time="); stamped == journal {
			t.Errorf("journal %v: lines stamped %v:\n%s", journal, stamped, read())
		}
	}
}
