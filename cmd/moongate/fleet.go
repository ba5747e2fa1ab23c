package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/fleet"
	"github.com/moongate/moongate/internal/redact"
	"github.com/moongate/moongate/internal/tlsfiles"
)

const fleetUse = "usage: moongate fleet keygen PREFIX | sign KEY DOC.json | push SIGNED.json | rollback KEY EARLIER.json | status"

// fleetCmd signs deployment documents and talks to the fleet's cloud broker directly
// (package fleet): nothing of Moongate's runs in the cloud.
func fleetCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef(fleetUse)
	}
	switch args[0] {
	case "keygen":
		return fleetKeygen(args[1:], stdout, stderr)
	case "sign":
		return fleetSign(args[1:], stdout, stderr)
	case "push":
		return fleetPush(ctx, args[1:], stdout, stderr)
	case "rollback":
		return fleetRollback(ctx, args[1:], stdout, stderr)
	case "status":
		return fleetStatus(ctx, args[1:], stdout, stderr)
	}
	return usagef(fleetUse)
}

func fleetKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet keygen", stderr)
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: moongate fleet keygen PREFIX")
	}
	pub, priv, err := fleet.Keygen()
	if err != nil {
		return err
	}
	if err := writeNew(pos[0]+".key", priv+"\n", 0o600); err != nil {
		return err
	}
	if err := writeNew(pos[0]+".pub", pub+"\n", 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s.key (keep it off the gateways) and %s.pub (for fleet.keys)\n", pos[0], pos[0])
	return nil
}

func fleetSign(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet sign", stderr)
	out := fs.String("o", "", "write the signed document to FILE (default: standard output)")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("usage: moongate fleet sign KEY DOC.json [-o SIGNED.json]")
	}
	key, doc, err := readTwo(pos[0], pos[1])
	if err != nil {
		return err
	}
	s, err := fleet.Sign(doc, string(key))
	if err != nil {
		return usageError{err}
	}
	b, _ := json.Marshal(s)
	if *out == "" {
		_, err := fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", *out, err)
	}
	return nil
}

// brokerFlags are the cloud broker's settings, as the gateway's fleet: section takes them.
type brokerFlags struct {
	broker, clientID, username, password, ca, cert, key *string
	timeout                                             *time.Duration
}

func fleetBrokerFlags(fs *flag.FlagSet) brokerFlags {
	host, _ := os.Hostname()
	return brokerFlags{
		broker:   fs.String("broker", os.Getenv("MOONGATE_FLEET_BROKER"), "the cloud broker: tcp://, ssl://, ws://, wss:// (env MOONGATE_FLEET_BROKER)"),
		clientID: fs.String("client-id", fmt.Sprintf("moongate-fleet-cli-%s-%d", host, os.Getpid()), "MQTT client id"),
		username: fs.String("username", os.Getenv("MOONGATE_FLEET_USERNAME"), "login (env MOONGATE_FLEET_USERNAME)"),
		password: fs.String("password", os.Getenv("MOONGATE_FLEET_PASSWORD"), "password (env MOONGATE_FLEET_PASSWORD, which keeps it out of the process list)"),
		ca:       fs.String("ca", "", "PEM bundle trusted besides the system roots"),
		cert:     fs.String("cert", "", "client certificate (PEM)"),
		key:      fs.String("key", "", "the client certificate's key (PEM)"),
		timeout:  fs.Duration("timeout", 30*time.Second, "give up when the broker has not answered by then"),
	}
}

// connect makes one clean-session connection to the broker (paho: a command that
// publishes or reads once needs neither reconnection nor a second connection).
func (b brokerFlags) connect(ctx context.Context) (paho.Client, error) {
	if *b.broker == "" {
		return nil, usagef("--broker is required (or MOONGATE_FLEET_BROKER)")
	}
	u, err := url.Parse(*b.broker)
	if err != nil || u.Host == "" {
		return nil, usagef("--broker %q: want tcp://host:port, ssl://, ws:// or wss://", redact.URL(*b.broker))
	}
	o := paho.NewClientOptions().AddBroker(*b.broker).SetClientID(*b.clientID).SetUsername(*b.username).
		SetPassword(*b.password).SetCleanSession(true).SetProtocolVersion(4).SetConnectTimeout(*b.timeout).
		SetAutoReconnect(false)
	files := tlsfiles.Files{CA: *b.ca, Cert: *b.cert, Key: *b.key}
	switch u.Scheme {
	case "ssl", "tls", "mqtts", "wss":
		tc, err := files.Config("")
		if err != nil {
			return nil, usageError{err}
		}
		o.SetTLSConfig(tc)
	case "tcp", "mqtt", "ws":
		if !files.Empty() {
			return nil, usagef("--broker %s: TLS files given for a connection without TLS (use ssl:// or wss://)", redact.URL(*b.broker))
		}
	default:
		return nil, usagef("--broker %s: unsupported scheme %q (tcp, ssl, ws, wss)", redact.URL(*b.broker), u.Scheme)
	}
	c := paho.NewClient(o)
	if err := waitToken(ctx, c.Connect()); err != nil {
		return nil, fmt.Errorf("connect %s: %w", redact.URL(*b.broker), err)
	}
	return c, nil
}

func waitToken(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func fleetPush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet push", stderr)
	bf := fleetBrokerFlags(fs)
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: moongate fleet push SIGNED.json --broker URL")
	}
	payload, err := os.ReadFile(pos[0])
	if err != nil {
		return usagef("read %s: %v", pos[0], err)
	}
	// The gateways check the signature; here the document must only say where it goes.
	var s fleet.Signed
	if err := json.Unmarshal(payload, &s); err != nil {
		return usagef("%s: not a signed document (moongate fleet sign): %v", pos[0], err)
	}
	doc, err := fleet.Parse(s.Document)
	if err != nil {
		return usagef("%s: %v", pos[0], err)
	}
	topic, _ := fleet.DesiredTopic(doc.Target)
	ctx, cancel := context.WithTimeout(ctx, *bf.timeout)
	defer cancel()
	c, err := bf.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	if err := waitToken(ctx, c.Publish(topic, 1, true, payload)); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	fmt.Fprintf(stdout, "pushed %s revision %d (%d functions) to %s\n", doc.Target, doc.Revision, len(doc.Functions), topic)
	return nil
}

// fleetRollback pushes the functions of an earlier document again, as the revision after
// the one the broker retains for its target: revisions only go up, so a rollback is a new
// revision, signed, and a replay of the old document stays ignored.
func fleetRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet rollback", stderr)
	bf := fleetBrokerFlags(fs)
	wait := fs.Duration("wait", 2*time.Second, "how long to wait for the retained document of the target once subscribed")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("usage: moongate fleet rollback KEY EARLIER.json --broker URL (EARLIER: a document as signed, or as written before signing)")
	}
	key, earlier, err := readTwo(pos[0], pos[1])
	if err != nil {
		return err
	}
	var s fleet.Signed
	if json.Unmarshal(earlier, &s) == nil && len(s.Document) > 0 {
		earlier = s.Document
	}
	doc, err := fleet.Parse(earlier)
	if err != nil {
		return usagef("%s: %v", pos[1], err)
	}
	topic, _ := fleet.DesiredTopic(doc.Target)
	ctx, cancel := context.WithTimeout(ctx, *bf.timeout+*wait)
	defer cancel()
	c, err := bf.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	current := make(chan uint64, 1)
	if err := waitToken(ctx, c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		var cur fleet.Signed
		if json.Unmarshal(m.Payload(), &cur) != nil {
			return
		}
		if d, err := fleet.Parse(cur.Document); err == nil {
			select {
			case current <- d.Revision:
			default:
			}
		}
	})); err != nil {
		return fmt.Errorf("subscribe %s: %w", topic, err)
	}
	var rev uint64
	select {
	case rev = <-current:
	case <-time.After(*wait):
		return fmt.Errorf("the broker holds no document for %s: push one (moongate fleet push) rather than roll back", doc.Target)
	}
	from := doc.Revision
	doc.Revision = rev + 1
	b, _ := json.Marshal(doc)
	signed, err := fleet.Sign(b, string(key))
	if err != nil {
		return usageError{err}
	}
	payload, _ := json.Marshal(signed)
	if err := waitToken(ctx, c.Publish(topic, 1, true, payload)); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	fmt.Fprintf(stdout, "rolled %s back to the functions of revision %d, pushed as revision %d (the broker held %d)\n",
		doc.Target, from, doc.Revision, rev)
	return nil
}

// gatewayState is what status gathered of one gateway.
type gatewayState struct {
	Report  *fleet.Report `json:"report,omitempty"`
	Online  string        `json:"online,omitempty"` // online, offline, or "" when unknown
	Gateway string        `json:"gateway"`
}

func fleetStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet status", stderr)
	bf := fleetBrokerFlags(fs)
	wait := fs.Duration("wait", 2*time.Second, "how long to gather the retained reports once subscribed")
	asJSON := fs.Bool("json", false, "one JSON object per gateway instead of the table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var mu sync.Mutex
	states := map[string]*gatewayState{}
	get := func(id string) *gatewayState {
		if states[id] == nil {
			states[id] = &gatewayState{Gateway: id}
		}
		return states[id]
	}
	h := func(_ paho.Client, m paho.Message) {
		id := fleet.GatewayOf(m.Topic())
		if id == "" || len(m.Payload()) == 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if strings.HasSuffix(m.Topic(), "/online") {
			get(id).Online = string(m.Payload())
			return
		}
		var r fleet.Report
		if err := json.Unmarshal(m.Payload(), &r); err == nil {
			get(id).Report = &r
		}
	}
	cctx, cancel := context.WithTimeout(ctx, *bf.timeout)
	defer cancel()
	c, err := bf.connect(cctx)
	if err != nil {
		return err
	}
	if err := waitToken(cctx, c.SubscribeMultiple(map[string]byte{fleet.AllReported: 1, fleet.AllOnline: 1}, h)); err != nil {
		c.Disconnect(0)
		return fmt.Errorf("subscribe: %w", err)
	}
	select { // the retained messages come right after the subscription
	case <-time.After(*wait):
	case <-ctx.Done():
	}
	c.Disconnect(0)
	mu.Lock()
	defer mu.Unlock()
	ids := slices.Sorted(maps.Keys(states))
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, id := range ids {
			if err := enc.Encode(states[id]); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GATEWAY\tREVISION\tSTATE\tERROR\tOFFLINE SINCE")
	for _, id := range ids {
		st := states[id]
		rev, state, errText, since := "-", cmp.Or(st.Online, "unknown"), "", ""
		if r := st.Report; r != nil {
			var revs []string
			for _, l := range r.Layers {
				revs = append(revs, fmt.Sprintf("%s@%d", l.Target, l.Revision))
			}
			rev = cmp.Or(strings.Join(revs, " "), "-")
			errText = r.LastError
			if st.Online == "offline" {
				since = r.Updated.Format(time.RFC3339) // its last report: the broker's will has no time
			} else if r.LastError != "" {
				state = "error"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id, rev, state, oneLine(errText), since)
	}
	return tw.Flush()
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }
