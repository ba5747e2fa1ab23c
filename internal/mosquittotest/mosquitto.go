// Package mosquittotest runs real MQTT brokers for tests: a Mosquitto process on a free
// 127.0.0.1 port with a generated configuration, and the certificates to talk TLS to it.
package mosquittotest

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/loopback"
)

// MosquittoOptions configure a test broker. The zero value is an anonymous broker on
// plain TCP that keeps nothing across a restart.
type MosquittoOptions struct {
	// Username and Password, if Username is set, are required of every client.
	Username string
	Password string
	// TLS makes the broker listen with TLS only; Mosquitto.PKI holds the certificates.
	TLS bool
	// RequireCertificate makes clients present a certificate signed by PKI.CA (implies TLS).
	RequireCertificate bool
	// Persistence keeps sessions, subscriptions and queued messages across Stop and Start.
	Persistence bool
	// Config is appended to the generated mosquitto.conf.
	Config string
}

// Mosquitto is a running Mosquitto broker owned by one test; it is stopped when the test
// ends, and its log is shown if the test failed.
type Mosquitto struct {
	URL  string // tcp://127.0.0.1:PORT, or ssl://127.0.0.1:PORT with TLS
	Addr string // 127.0.0.1:PORT
	Dir  string // configuration, log, persistence and certificates
	PKI  *PKI   // with TLS: the CA, and server and client certificates

	t    testing.TB
	bin  string
	conf string
	log  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartMosquitto starts a broker and waits until it accepts connections. The test fails
// if Mosquitto is not installed (apt-get install mosquitto).
func StartMosquitto(t testing.TB, opts MosquittoOptions) *Mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto" // Debian installs it outside a user's PATH
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("mosquitto is not installed (apt-get install mosquitto): %v", err)
		}
	}
	dir := t.TempDir()
	m := &Mosquitto{Dir: dir, t: t, bin: bin, conf: filepath.Join(dir, "mosquitto.conf"), log: filepath.Join(dir, "mosquitto.log")}
	if opts.TLS || opts.RequireCertificate {
		m.PKI = NewPKI(t, dir)
	}
	t.Cleanup(func() {
		m.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(m.log); err == nil {
				t.Logf("mosquitto log:\n%s", b)
			}
		}
	})
	// The port is free when picked but may be taken before Mosquitto binds it: try again.
	for try := 0; ; try++ {
		port := loopback.FreePort(t)
		m.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		m.URL = "tcp://" + m.Addr
		if m.PKI != nil {
			m.URL = "ssl://" + m.Addr
		}
		m.writeConfig(port, opts)
		if err := m.start(); err == nil {
			return m
		} else if try == 2 {
			t.Fatalf("start mosquitto: %v", err)
		}
	}
}

func (m *Mosquitto) writeConfig(port int, opts MosquittoOptions) {
	m.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listener %d 127.0.0.1\n", port)
	// Run as whoever runs the test: as root, Mosquitto would otherwise switch to the
	// mosquitto user, which cannot read the test's files.
	if u, err := user.Current(); err == nil {
		fmt.Fprintf(&b, "user %s\n", u.Username)
	}
	b.WriteString("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nconnection_messages true\n")
	if opts.Username != "" {
		pw := filepath.Join(m.Dir, "passwd")
		writeFile(m.t, pw, opts.Username+":"+passwordHash(m.t, opts.Password)+"\n")
		fmt.Fprintf(&b, "allow_anonymous false\npassword_file %s\n", pw)
	} else {
		b.WriteString("allow_anonymous true\n")
	}
	if opts.Persistence {
		fmt.Fprintf(&b, "persistence true\npersistence_location %s/\n", m.Dir)
	} else {
		b.WriteString("persistence false\n")
	}
	if m.PKI != nil {
		fmt.Fprintf(&b, "cafile %s\ncertfile %s\nkeyfile %s\n", m.PKI.CA, m.PKI.ServerCert, m.PKI.ServerKey)
		if opts.RequireCertificate {
			b.WriteString("require_certificate true\n")
		}
	}
	b.WriteString(opts.Config)
	b.WriteString("\n")
	writeFile(m.t, m.conf, b.String())
}

func writeFile(t testing.TB, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// passwordHash is the hash mosquitto_passwd writes for Mosquitto 2:
// $7$ is PBKDF2-SHA512, then the iterations, a 12-byte salt and a 64-byte key, in base64.
func passwordHash(t testing.TB, password string) string {
	t.Helper()
	salt := make([]byte, 12)
	rand.Read(salt)
	key, err := pbkdf2.Key(sha512.New, password, salt, 101, 64)
	if err != nil {
		t.Fatal(err)
	}
	return "$7$101$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(key)
}

// start runs the broker and waits until its port accepts connections.
func (m *Mosquitto) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("mosquitto already running")
	}
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", m.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.Addr, time.Second)
		if err == nil {
			c.Close()
			m.cmd, m.exited = cmd, exited
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("mosquitto exited at start (see %s)", m.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("mosquitto does not accept connections on %s", m.Addr)
		}
	}
}

// Start starts the broker again, on the same port, after Stop or Kill.
func (m *Mosquitto) Start() {
	m.t.Helper()
	if err := m.start(); err != nil {
		m.t.Fatalf("restart mosquitto: %v", err)
	}
}

// Stop stops the broker with SIGTERM and waits for it to exit; with Persistence it saves
// its sessions and queued messages first.
func (m *Mosquitto) Stop() { m.signal(syscall.SIGTERM) }

// Kill stops the broker with SIGKILL: it saves nothing.
func (m *Mosquitto) Kill() { m.signal(syscall.SIGKILL) }

// Restart is Stop then Start.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Stop()
	m.Start()
}

func (m *Mosquitto) signal(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	m.cmd, m.exited = nil, nil
}
