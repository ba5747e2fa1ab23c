package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

// passwd runs `moongate passwd FILE USER` with the password on standard input, as a
// provisioning script would.
func passwd(t *testing.T, file, user, password string) {
	t.Helper()
	cmd := exec.Command(gatewayBinary(t), "passwd", file, user)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("moongate passwd %s: %v\n%s", user, err, out)
	}
}

func connectDevice(broker, user, password string) (paho.Client, error) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(user).SetUsername(user).
		SetPassword(password).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	tok := c.Connect()
	tok.WaitTimeout(10 * time.Second)
	return c, tok.Error()
}

// A broker that serves the LAN needs credentials, or says loudly that it takes anyone.
func TestBrokerBeyondLoopbackNeedsCredentials(t *testing.T) {
	dir := t.TempDir()
	cfg := writeGatewayFiles(t, dir, "mqtt:\n  embedded: {listen: 0.0.0.0:1883}\n", nil)
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{"check", "-c", cfg}, &stdout, &stderr); code != exitUsage ||
		!strings.Contains(stderr.String(), cfg+":2: mqtt.embedded.listen: \"0.0.0.0:1883\" is beyond loopback") {
		t.Fatalf("check: exit %d\n%s", code, stderr.String())
	}
	cfg = writeGatewayFiles(t, dir, "mqtt:\n  embedded: {listen: 0.0.0.0:1883, allow_anonymous: true}\n", nil)
	stderr.Reset()
	if code := Main(context.Background(), []string{"check", "-c", cfg}, &stdout, &stderr); code != 0 {
		t.Fatalf("check with allow_anonymous: exit %d\n%s", code, stderr.String())
	}
	cfg = writeGatewayFiles(t, dir, "mqtt:\n  embedded: {password_file: passwd}\n", map[string]string{"passwd": "dev-1:plaintext\n"})
	stderr.Reset()
	if code := Main(context.Background(), []string{"check", "-c", cfg}, &stdout, &stderr); code != exitUsage ||
		!strings.Contains(stderr.String(), "mqtt.embedded.password_file:") || !strings.Contains(stderr.String(), "passwd:1: user \"dev-1\": not a bcrypt hash") {
		t.Fatalf("check of a plain-text password file: exit %d\n%s", code, stderr.String())
	}
}

// Devices log in with the password file written by moongate passwd and reach only their
// own topics (the ACL gives each sensors/%u/#); a SIGHUP after adding a device lets it
// in without disconnecting the others.
func TestDeviceCredentialsAndACL(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	passwd(t, pw, "dev-1", "one-secret")
	if b, _ := os.ReadFile(pw); bytes.Contains(b, []byte("one-secret")) {
		t.Fatal("the password file holds the password")
	}
	apiPort, mqttPort := loopback.FreePort(t), loopback.FreePort(t)
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway: {id: lan, data_dir: ./data, console: {listen: 127.0.0.1:%d}}
mqtt:
  embedded: {listen: 127.0.0.1:%d, password_file: passwd, acl_file: acl}
functions:
  - {name: count, source: count.lua, triggers: ["mqtt:sensors/+/temp@1"]}
`, apiPort, mqttPort), map[string]string{
		"acl":       "pattern readwrite sensors/%u/#\n",
		"count.lua": `function handle(e) kv.incr(e.topic) end`,
	})
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()
	defer gw.stop()
	broker := fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)

	if _, err := connectDevice(broker, "dev-1", "wrong"); err == nil {
		t.Fatal("a wrong password connected")
	}
	if _, err := connectDevice(broker, "", ""); err == nil {
		t.Fatal("an anonymous device connected")
	}
	dev1, err := connectDevice(broker, "dev-1", "one-secret")
	if err != nil {
		t.Fatalf("dev-1: %v", err)
	}
	defer dev1.Disconnect(50)
	for _, topic := range []string{"sensors/dev-1/temp", "sensors/dev-2/temp"} {
		if tok := dev1.Publish(topic, 1, false, "21"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	sub := dev1.Subscribe("sensors/#", 0, nil)
	sub.WaitTimeout(10 * time.Second)
	if code := sub.(*paho.SubscribeToken).Result()["sensors/#"]; code != 0x80 {
		t.Fatalf("dev-1 subscribed to sensors/#: %#x", code)
	}
	poll.Within(t, 10*time.Second, "dev-1's own reading counted", func() bool {
		return gw.metric("moongate_invocations_total") == 1
	})
	if n := gw.metric("moongate_broker_refused_total"); n < 4 { // 2 bad logins, 1 publish, 1 subscribe
		t.Fatalf("refusals counted: %v", n)
	}

	passwd(t, pw, "dev-2", "two-secret")
	if err := gw.c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var dev2 paho.Client
	poll.Within(t, 10*time.Second, "dev-2 let in after the reload", func() bool {
		dev2, err = connectDevice(broker, "dev-2", "two-secret")
		return err == nil
	})
	defer dev2.Disconnect(50)
	if !dev1.IsConnectionOpen() {
		t.Fatal("the reload disconnected dev-1")
	}
	if tok := dev2.Publish("sensors/dev-2/temp", 1, false, "22"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("dev-2 publish: %v", tok.Error())
	}
	poll.Within(t, 10*time.Second, "dev-2's reading counted", func() bool {
		return gw.metric("moongate_invocations_total") == 2
	})
	if out := gw.c.out.String(); strings.Contains(out, "one-secret") || strings.Contains(out, "two-secret") {
		t.Fatalf("a password is in the log:\n%s", out)
	}
}

// A password in a broker URL never shows: not in the log, the status API, a sink's
// last_error, nor moongate check's errors.
func TestBrokerPasswordRedacted(t *testing.T) {
	const secret = "Hunter2Secret"
	dir := t.TempDir()
	apiPort, deadPort := loopback.FreePort(t), loopback.FreePort(t) // nothing listens on deadPort
	cfg := writeGatewayFiles(t, dir, fmt.Sprintf(`gateway: {id: redact, data_dir: ./data, console: {listen: 127.0.0.1:%d}}
mqtt: {broker: "tcp://gw:%s@127.0.0.1:%d"}
sync:
  sinks:
    - {name: cloud, streams: ["*"], mqtt: {broker: "tcp://sink:%s@127.0.0.1:%d", topic: "gw/{stream}"}}
`, apiPort, secret, deadPort, secret, deadPort), nil)
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()
	poll.Within(t, 10*time.Second, "a failed connection attempt in the log", func() bool {
		return strings.Contains(gw.c.out.String(), "will retry")
	})
	for _, path := range []string{"/api/v1/status", "/api/v1/sync"} {
		resp, err := http.Get(gw.api() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), secret) || !strings.Contains(string(body), "xxxxx") && path == "/api/v1/status" {
			t.Errorf("%s: %s", path, body)
		}
	}
	gw.stop()
	if out := gw.c.out.String(); strings.Contains(out, secret) {
		t.Errorf("the password is in the log:\n%s", out)
	}
	bad := writeGatewayFiles(t, dir, "mqtt: {broker: \"ftp://gw:"+secret+"@host\"}\n", nil)
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{"check", "-c", bad}, &stdout, &stderr); code != exitUsage || strings.Contains(stderr.String(), secret) {
		t.Errorf("check: exit %d, %s", code, stderr.String())
	}
}
