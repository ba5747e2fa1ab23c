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

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/mosquittotest"
	"github.com/moongate/moongate/internal/poll"
)

// Cluster is one or more nats-server processes with JetStream, routed together
// when more than one.
type Cluster struct {
	t     testing.TB // nil when Launch started it
	opts  Options
	Nodes []*Node
}

// Node is one server process.
type Node struct {
	Name     string
	scheme   string // nats or tls
	port     int
	httpPort int
	mqttPort int    // 0: no MQTT listener
	log      string // its output
	cmd      *exec.Cmd
	done     chan struct{}
}

// MQTTURL is the node's MQTT listener (Options.MQTT), tcp://127.0.0.1:PORT.
func (n *Node) MQTTURL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", n.mqttPort) }

// URL is the node's client URL.
func (n *Node) URL() string { return fmt.Sprintf("%s://127.0.0.1:%d", n.scheme, n.port) }

// Build builds nats-server into dir and returns its path; the go build cache makes every
// build after the first quick. It runs go in the current directory, which must be in
// this module.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build nats-server: %v\n%s", err, out)
	}
	return bin, nil
}

// Options add security to the servers. The zero value is plain TCP, no authentication.
type Options struct {
	// TLS makes the servers speak TLS only, with PKI's server certificate, and require a
	// client certificate signed by its CA.
	TLS *mosquittotest.PKI
	// Auth, when set, runs the servers in operator mode: only holders of its users'
	// credentials get in.
	Auth *Auth
	// MQTT gives each server an MQTT listener (Node.MQTTURL), whose sessions and retained
	// messages live in JetStream, replicated across the cluster.
	MQTT bool
}

// Start starts size servers (1: a single server, no cluster) and waits until each
// serves JetStream (and MQTT clients, with Options.MQTT). They are killed when the test ends.
func Start(t testing.TB, size int) *Cluster { return StartWith(t, size, Options{}) }

// StartWith is Start with security; see Options.
func StartWith(t testing.TB, size int, o Options) *Cluster {
	t.Helper()
	bin, err := Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Launch(bin, t.TempDir(), size, o)
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	t.Cleanup(c.Stop)
	return c
}

// Launch is StartWith outside a test (the benchmarks): the servers of bin keep their
// files under dir and run until Stop.
func Launch(bin, dir string, size int, o Options) (*Cluster, error) {
	c := &Cluster{opts: o}
	ports := make([]int, 4*size) // client, monitoring, route, mqtt
	for i := range ports {
		var err error
		if ports[i], err = loopback.Port(); err != nil {
			return nil, err
		}
	}
	var routes []string
	for i := range size {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[4*i+2]))
	}
	for i := range size {
		n := &Node{Name: fmt.Sprintf("n%d", i+1), scheme: "nats", port: ports[4*i], httpPort: ports[4*i+1], done: make(chan struct{})}
		if o.TLS != nil {
			n.scheme = "tls"
		}
		if o.MQTT {
			n.mqttPort = ports[4*i+3]
		}
		dir := filepath.Join(dir, n.Name)
		if err := n.start(bin, dir, c.conf(n, dir, ports[4*i+2], routes)); err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := n.waitServing(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// conf is node n's configuration file, its data in dir.
func (c *Cluster) conf(n *Node, dir string, routePort int, routes []string) string {
	conf := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n"+
		"jetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 1GB }\n",
		n.Name, n.port, n.httpPort, filepath.Join(dir, "js"))
	if p := c.opts.TLS; p != nil {
		conf += fmt.Sprintf("tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true }\n", p.ServerCert, p.ServerKey, p.CA)
	}
	if a := c.opts.Auth; a != nil {
		conf += fmt.Sprintf("operator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: { %s: %q, %s: %q }\n",
			a.operatorJWT, a.systemPub, a.accountPub, a.accountJWT, a.systemPub, a.systemJWT)
	}
	if n.mqttPort != 0 {
		conf += fmt.Sprintf("mqtt { listen: 127.0.0.1:%d }\n", n.mqttPort)
	}
	if len(routes) > 1 {
		conf += fmt.Sprintf("cluster { name: moongate-test, listen: 127.0.0.1:%d, routes: [%s] }\n",
			routePort, strings.Join(routes, ", "))
	}
	return conf
}

// start runs bin with the configuration conf, its files and output (nats.log) in dir.
func (n *Node) start(bin, dir, conf string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		return err
	}
	n.log = filepath.Join(dir, "nats.log")
	log, err := os.Create(n.log)
	if err != nil {
		return err
	}
	n.cmd = exec.Command(bin, "-c", cf)
	n.cmd.Stdout, n.cmd.Stderr = log, log
	if err := n.cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	go func() {
		defer close(n.done)
		n.cmd.Wait()
		log.Close()
	}()
	return nil
}

// waitServing waits up to 30 s until the node serves JetStream and, with an MQTT
// listener, MQTT clients (it turns them away until the cluster has its JetStream leaders).
func (n *Node) waitServing() error {
	deadline := time.Now().Add(30 * time.Second)
	for !n.serving() || n.mqttPort != 0 && !n.servingMQTT() {
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(n.log)
			return fmt.Errorf("%s not serving after 30s:\n%s", n.Name, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// servingMQTT reports whether an MQTT client gets in.
func (n *Node) servingMQTT() bool {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(n.MQTTURL()).SetClientID("probe-" + n.Name).SetCleanSession(true))
	tok := c.Connect()
	ok := tok.WaitTimeout(5*time.Second) && tok.Error() == nil
	if ok {
		c.Disconnect(0)
	}
	return ok
}

// MonitorURL is the node's monitoring endpoint (/varz, /healthz...), http://127.0.0.1:PORT.
func (n *Node) MonitorURL() string { return fmt.Sprintf("http://127.0.0.1:%d", n.httpPort) }

// serving reports whether the node's JetStream is up, by its monitoring endpoint.
func (n *Node) serving() bool {
	resp, err := http.Get(n.MonitorURL() + "/healthz?js-enabled-only=true")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// URLs lists every node's URL, comma-separated, as NATS clients take a cluster.
func (c *Cluster) URLs() string {
	var us []string
	for _, n := range c.Nodes {
		us = append(us, n.URL())
	}
	return strings.Join(us, ",")
}

// Node returns the node of that server name (in a test only, as Client).
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// Stop kills every node.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		c.Kill(n)
	}
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
	opts := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	if p := c.opts.TLS; p != nil {
		opts = append(opts, nats.RootCAs(p.CA), nats.ClientCert(p.ClientCert, p.ClientKey))
	}
	if a := c.opts.Auth; a != nil {
		opts = append(opts, nats.UserCredentials(a.UserCreds))
	}
	nc, err := nats.Connect(c.URLs(), opts...)
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
