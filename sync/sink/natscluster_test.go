package sink

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// natsCluster is a real NATS cluster with JetStream on loopback: one
// nats-server process per node, built from the nats-server module this
// module pins as a tool.
type natsCluster struct {
	t     testing.TB
	nodes []*natsNode
}

type natsNode struct {
	name     string
	port     int
	httpPort int
	cmd      *exec.Cmd
	done     chan struct{}
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// natsServerBinary builds nats-server (cached by the go build cache).
func natsServerBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	return bin
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// startNATSCluster starts size nodes (1 is a single server, no cluster)
// and waits until each serves JetStream.
func startNATSCluster(t testing.TB, size int) *natsCluster {
	t.Helper()
	bin := natsServerBinary(t)
	ports := freePorts(t, 3*size)
	c := &natsCluster{t: t}
	var routes []string
	for i := range size {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+2]))
	}
	for i := range size {
		n := &natsNode{name: fmt.Sprintf("n%d", i+1), port: ports[3*i], httpPort: ports[3*i+1], done: make(chan struct{})}
		dir := t.TempDir()
		conf := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n"+
			"jetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 1GB }\n",
			n.name, n.port, n.httpPort, filepath.Join(dir, "js"))
		if size > 1 {
			conf += fmt.Sprintf("cluster { name: moongate-test, listen: 127.0.0.1:%d, routes: [%s] }\n",
				ports[3*i+2], strings.Join(routes, ", "))
		}
		cf := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		n.cmd = exec.Command(bin, "-c", cf)
		log, err := os.Create(filepath.Join(dir, "nats.log"))
		if err != nil {
			t.Fatal(err)
		}
		n.cmd.Stdout, n.cmd.Stderr = log, log
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(n.done)
			n.cmd.Wait()
			log.Close()
		}()
		t.Cleanup(func() { c.kill(n) })
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		eventually(t, 30*time.Second, n.name+" serving JetStream", func() bool {
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

func (c *natsCluster) urls() string {
	var us []string
	for _, n := range c.nodes {
		us = append(us, n.url())
	}
	return strings.Join(us, ",")
}

func (c *natsCluster) node(name string) *natsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// kill ends a node at once, as a power cut would.
func (c *natsCluster) kill(n *natsNode) {
	n.cmd.Process.Kill()
	<-n.done
}
