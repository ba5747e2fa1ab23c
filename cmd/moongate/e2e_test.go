package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/mosquittotest"
)

// The end-to-end tests run the real binary as a child process. MOONGATE_E2E_BIN names a
// prebuilt binary (e.g. an ARM build) and MOONGATE_E2E_EXEC a wrapper to run it with
// (qemu-arm, qemu-aarch64): `make smoke-arm` runs the ARM builds through the same path.
// MOONGATE_E2E_TYPE is the self-update type that binary must report (moongate-linux-armv7).

var buildOnce builtBinary

func gatewayBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MOONGATE_E2E_BIN"); p != "" {
		return p
	}
	return buildOnce.build(t, ".", "moongate")
}

// builtBinary is a command the tests build once per run, with flags added to go build
// and env (GOARCH=...) to its environment.
type builtBinary struct {
	sync.Once
	flags, env []string
	path       string
	err        error
}

func (b *builtBinary) build(t *testing.T, pkg, name string) string {
	t.Helper()
	b.Do(func() {
		dir, err := os.MkdirTemp("", "moongate-e2e")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		args := append(append([]string{"build"}, b.flags...), "-o", b.path, pkg)
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), b.env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// child is a moongate process under test.
type child struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	api    string
	exited chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startGateway runs `moongate run -c cfg` and waits until its API answers.
func startGateway(t *testing.T, dir, cfg string, apiPort int) *child {
	t.Helper()
	c := launchGateway(t, dir, cfg, apiPort, nil)
	c.waitAPI(t)
	return c
}

// launchGateway starts `moongate run -c cfg` with env added to the test's, and returns
// at once; the process is killed when the test ends if it still runs.
func launchGateway(t *testing.T, dir, cfg string, apiPort int, env []string) *child {
	t.Helper()
	return launchBinary(t, gatewayBinary(t), dir, cfg, apiPort, env)
}

// launchBinary is launchGateway with the moongate binary at bin.
func launchBinary(t *testing.T, bin, dir, cfg string, apiPort int, env []string) *child {
	t.Helper()
	args := []string{"run", "-c", cfg}
	name := bin
	if wrap := os.Getenv("MOONGATE_E2E_EXEC"); wrap != "" {
		name, args = wrap, append([]string{bin}, args...)
	}
	c := &child{out: &syncBuffer{}, api: fmt.Sprintf("http://127.0.0.1:%d", apiPort), exited: make(chan error, 1)}
	c.cmd = exec.Command(name, args...)
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if env != nil {
		c.cmd.Env = append(os.Environ(), env...)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.exited <- c.cmd.Wait() }()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			<-c.exited
		}
		if t.Failed() {
			t.Logf("gateway output:\n%s", c.out.String())
		}
	})
	return c
}

// waitAPI waits until the gateway's API answers.
func (c *child) waitAPI(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // qemu is slow to start
	for {
		resp, err := http.Get(c.api + "/api/v1/status")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-c.exited:
			t.Fatalf("gateway exited before it was ready: %v\n%s", err, c.out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready after 60s:\n%s", c.out.String())
		}
	}
}

// stop sends SIGTERM and requires exit code 0 within 5 s (SPEC §2).
func (c *child) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.exited:
		if err != nil {
			t.Fatalf("gateway exit after SIGTERM: %v\n%s", err, c.out.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("gateway still running 5s after SIGTERM")
	}
}

func writeQuickstart(t *testing.T, broker string, mqttPort, apiPort int) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	src, err := os.ReadFile("../../examples/quickstart/functions/temp_alert.lua")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "functions"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "functions", "temp_alert.lua"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "moongate.yaml")
	body := fmt.Sprintf(`gateway:
  id: e2e
  data_dir: ./data
  console: {listen: 127.0.0.1:%d}
mqtt:
  broker: %s
  embedded: {listen: 127.0.0.1:%d}
functions:
  - name: temp-alert
    source: functions/temp_alert.lua
    triggers: ["mqtt:sensors/+/temp@1"]
    env: {THRESHOLD: "30"}
    emit: alerts
`, apiPort, broker, mqttPort)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

func mqttClient(t *testing.T, broker, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// TestE2E: devices publish readings, the quickstart function alerts on the hot ones, and
// exactly those alerts arrive; then a clean stop. Once on the embedded broker and once on
// a real Mosquitto.
func TestE2E(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
		dir, cfg := writeQuickstart(t, "embedded", mqttPort, apiPort)
		g := startGateway(t, dir, cfg, apiPort)
		checkAlerts(t, fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort))
		g.stop(t)
	})
	t.Run("mosquitto", func(t *testing.T) {
		broker := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{})
		apiPort := loopback.FreePort(t)
		dir, cfg := writeQuickstart(t, broker.URL, loopback.FreePort(t), apiPort)
		g := startGateway(t, dir, cfg, apiPort)
		checkAlerts(t, broker.URL)
		g.stop(t)
	})
}

type alert struct {
	Device string  `json:"device"`
	Temp   float64 `json:"temp"`
}

func checkAlerts(t *testing.T, broker string) {
	t.Helper()
	sub := mqttClient(t, broker, "e2e-watch")
	got := make(chan alert, 100)
	if tok := sub.Subscribe("alerts/#", 1, func(_ paho.Client, m paho.Message) {
		var a alert
		if err := json.Unmarshal(m.Payload(), &a); err != nil {
			t.Errorf("alert on %s is not JSON: %q", m.Topic(), m.Payload())
		}
		if m.Topic() != "alerts/"+a.Device {
			t.Errorf("alert for %s on topic %s", a.Device, m.Topic())
		}
		got <- a
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	readings := map[string][]string{
		"dev-1": {`{"temp": 25}`, `{"temp": 31}`, `{"temp": 29.5}`, `{"temp": 35.5}`},
		"dev-2": {`{"temp": 30}`, `30.1`, `{"temp": "hot"}`, `not json`},
		"dev-3": {`{"temp": 12}`, `{"temp": 40}`},
	}
	want := []alert{{"dev-1", 31}, {"dev-1", 35.5}, {"dev-2", 30.1}, {"dev-3", 40}}
	for dev, payloads := range readings {
		pub := mqttClient(t, broker, "e2e-"+dev)
		for _, p := range payloads {
			if tok := pub.Publish("sensors/"+dev+"/temp", 1, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
	}
	var alerts []alert
	timeout := time.After(20 * time.Second)
	for len(alerts) < len(want) {
		select {
		case a := <-got:
			alerts = append(alerts, a)
		case <-timeout:
			t.Fatalf("got alerts %v, want %v", alerts, want)
		}
	}
	select { // and nothing more
	case a := <-got:
		t.Fatalf("unexpected extra alert %v", a)
	case <-time.After(500 * time.Millisecond):
	}
	sort.Slice(alerts, func(i, j int) bool {
		return alerts[i].Device < alerts[j].Device || alerts[i].Device == alerts[j].Device && alerts[i].Temp < alerts[j].Temp
	})
	for i := range want {
		if alerts[i] != want[i] {
			t.Fatalf("alerts %v, want %v", alerts, want)
		}
	}
}
