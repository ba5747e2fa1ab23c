package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
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

// Under the journal (JOURNAL_STREAM names stderr), lines carry no time of their own: the
// journal stamps each; anywhere else they do.
func TestJournalLinesHaveNoTimestamp(t *testing.T) {
	dir := t.TempDir()
	apiPort, mqttPort := loopback.FreePort(t), loopback.FreePort(t)
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
