package sink

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

const mosquittoBin = "/usr/sbin/mosquitto"

// broker is a Mosquitto started by a test, TLS only, requiring client
// certificates of the test CA, with persistence so that a subscriber's
// session survives a restart.
type broker struct {
	t    testing.TB
	pki  pki
	addr string
	conf string
	cmd  *exec.Cmd
	done chan struct{}
	logs logBuffer // mosquitto's stderr, shown when the test fails
}

func startBroker(t testing.TB, p pki) *broker {
	t.Helper()
	if _, err := os.Stat(mosquittoBin); err != nil {
		t.Skip("mosquitto not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	err = os.WriteFile(conf, fmt.Appendf(nil, `user root
listener %s 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
use_identity_as_username true
allow_anonymous true
persistence true
persistence_location %s/
autosave_interval 3600
max_queued_messages 0
max_inflight_messages 1000
log_type error
`, port, p.CA, p.ServerCert, p.ServerKey, dir), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	b := &broker{t: t, pki: p, addr: addr, conf: conf}
	b.start()
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("mosquitto:\n%s", b.logs.buf.String())
		}
	})
	return b
}

func (b *broker) url() string { return "ssl://" + b.addr }

func (b *broker) start() {
	b.t.Helper()
	b.cmd = exec.Command(mosquittoBin, "-c", b.conf)
	b.cmd.Stderr = &b.logs
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(b.cmd, b.done)
	eventually(b.t, 5*time.Second, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", b.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stop ends the broker gracefully (it saves its sessions) and waits.
func (b *broker) stop() {
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-b.done
	}
	b.cmd = nil
}

// subscriber is a cloud-side consumer of the bridged records.
type subscriber struct {
	mu   sync.Mutex
	msgs []paho.Message
	cli  paho.Client
}

func subscribe(t testing.TB, b *broker, filter string) *subscriber {
	t.Helper()
	tlsCfg, err := tlsConfig(b.pki.CA, b.pki.ClientCert, b.pki.ClientKey, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{}
	o := paho.NewClientOptions().AddBroker(b.url()).SetClientID("cloud-consumer").
		SetTLSConfig(tlsCfg).SetCleanSession(false).SetAutoReconnect(true).
		SetMaxReconnectInterval(100 * time.Millisecond).SetOrderMatters(true)
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
	})
	s.cli = paho.NewClient(o)
	if tok := s.cli.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := s.cli.Subscribe(filter, 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.cli.Disconnect(0) })
	return s
}

func (s *subscriber) received() []paho.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]paho.Message(nil), s.msgs...)
}
