// Package natstest runs real NATS servers with JetStream for tests: nats-server
// processes on free 127.0.0.1 ports, alone or as a cluster, built from the
// nats-server module that go.mod pins as a tool.
package natstest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

// Cluster is one or more nats-server processes with JetStream, routed together
// when more than one.
type Cluster struct {
	t     testing.TB
	Nodes []*Node
}

// Node is one server process.
type Node struct {
	Name     string
	port     int
	httpPort int
	cmd      *exec.Cmd
	done     chan struct{}
}

// URL is the node's client URL.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// binary builds nats-server; the go build cache makes every build after the first quick.
func binary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	return bin
}

// Start starts size servers (1: a single server, no cluster) and waits until each
// serves JetStream. They are killed when the test ends.
func Start(t testing.TB, size int) *Cluster {
	t.Helper()
	bin := binary(t)
	c := &Cluster{t: t}
	ports := make([]int, 3*size) // client, monitoring, route
	for i := range ports {
		ports[i] = loopback.FreePort(t)
	}
	var routes []string
	for i := range size {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+2]))
	}
	for i := range size {
		n := &Node{Name: fmt.Sprintf("n%d", i+1), port: ports[3*i], httpPort: ports[3*i+1], done: make(chan struct{})}
		dir := t.TempDir()
		conf := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n"+
			"jetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 1GB }\n",
			n.Name, n.port, n.httpPort, filepath.Join(dir, "js"))
		if size > 1 {
			conf += fmt.Sprintf("cluster { name: moongate-test, listen: 127.0.0.1:%d, routes: [%s] }\n",
				ports[3*i+2], strings.Join(routes, ", "))
		}
		cf := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		log, err := os.Create(filepath.Join(dir, "nats.log"))
		if err != nil {
			t.Fatal(err)
		}
		n.cmd = exec.Command(bin, "-c", cf)
		n.cmd.Stdout, n.cmd.Stderr = log, log
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(n.done)
			n.cmd.Wait()
			log.Close()
		}()
		t.Cleanup(func() { c.Kill(n) })
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		poll.Within(t, 30*time.Second, n.Name+" serving JetStream", func() bool {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", n.httpPort))
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	return c
}

// URLs lists every node's URL, comma-separated, as NATS clients take a cluster.
func (c *Cluster) URLs() string {
	var us []string
	for _, n := range c.Nodes {
		us = append(us, n.URL())
	}
	return strings.Join(us, ",")
}

// Node returns the node of that server name.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// Kill ends a node at once, as a power cut would.
func (c *Cluster) Kill(n *Node) {
	n.cmd.Process.Kill()
	<-n.done
}

// Client connects the test to the cluster (reconnecting to any node) and returns its
// JetStream.
func (c *Cluster) Client() jetstream.JetStream {
	c.t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return js
}

// CreateStream creates a stream once the cluster has a meta leader.
func CreateStream(t testing.TB, js jetstream.JetStream, cfg jetstream.StreamConfig) jetstream.Stream {
	t.Helper()
	var s jetstream.Stream
	poll.Within(t, 30*time.Second, "stream "+cfg.Name+" created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		s, err = js.CreateStream(ctx, cfg)
		return err == nil
	})
	return s
}

// Messages reads every message of the stream in stream order, one by one, retrying
// while the cluster elects leaders.
func Messages(t testing.TB, js jetstream.JetStream, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	var info *jetstream.StreamInfo
	var stream jetstream.Stream
	poll.Within(t, 30*time.Second, "the stream's info", func() bool {
		var err error
		if stream, err = js.Stream(ctx, name); err == nil {
			info, err = stream.Info(ctx)
		}
		return err == nil
	})
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		var m *jetstream.RawStreamMsg
		poll.Within(t, 30*time.Second, fmt.Sprintf("message %d", seq), func() bool {
			var err error
			m, err = stream.GetMsg(ctx, seq)
			return err == nil
		})
		out = append(out, m)
	}
	return out
}
