package config

import (
	"fmt"
	"os"

	"github.com/moongate/moongate/fleet"
)

// Fleet connects the gateway to the fleet's desired state on a cloud broker (package
// fleet). Without a broker the gateway takes no document.
type Fleet struct {
	Broker string `yaml:"broker"` // tcp://, ssl://, ws://, wss://
	// FailoverBrokers are more nodes of the same cluster, tried in turn when the one in
	// use goes away.
	FailoverBrokers []string `yaml:"failover_brokers"`
	ClientID        string   `yaml:"client_id"` // default "moongate-fleet-" + gateway id
	Username        string   `yaml:"username"`
	Password        string   `yaml:"password"`
	TLS             TLS      `yaml:"tls"`
	// Groups are the groups the gateway joins, lowest precedence first among equal
	// priorities (fleet.Merge).
	Groups []string `yaml:"groups"`
	// Keys are public key files (moongate fleet keygen): a document is applied only when
	// one of them signed it.
	Keys []string `yaml:"keys"`

	// PublicKeys are Keys, read and decoded by Load.
	PublicKeys []fleet.PublicKey `yaml:"-"`
}

// validateFleet checks the fleet: section and reads its keys.
func (c *Config) validateFleet() ErrorList {
	f := &c.Fleet
	var errs ErrorList
	add := func(key, format string, args ...any) { errs = append(errs, c.Errorf(key, format, args...)) }
	if f.Broker == "" {
		if len(f.Groups) > 0 || len(f.Keys) > 0 {
			add("fleet.broker", "required with fleet.groups or fleet.keys: the cloud broker's URL")
		}
		return errs
	}
	if err := checkURL(f.Broker, "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"); err != nil {
		add("fleet.broker", "%v", err)
	}
	for i, b := range f.FailoverBrokers {
		if err := checkURL(b, "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"); err != nil {
			add(fmt.Sprintf("fleet.failover_brokers[%d]", i), "%v", err)
		}
	}
	if (f.TLS.Cert == "") != (f.TLS.Key == "") {
		add("fleet.tls", "cert and key go together")
	}
	if err := fleet.CheckName(c.Gateway.ID); err != nil {
		add("gateway.id", "the fleet names the gateway by its id: %v", err)
	}
	seen := map[string]bool{}
	for i, g := range f.Groups {
		if err := fleet.CheckName(g); err != nil {
			add(fmt.Sprintf("fleet.groups[%d]", i), "%v", err)
		} else if seen[g] {
			add(fmt.Sprintf("fleet.groups[%d]", i), "duplicate group %q", g)
		}
		seen[g] = true
	}
	if len(f.Keys) == 0 {
		add("fleet.keys", "at least one public key file is required (moongate fleet keygen): no document is applied unsigned")
	}
	f.PublicKeys = f.PublicKeys[:0]
	for i, p := range f.Keys {
		key := fmt.Sprintf("fleet.keys[%d]", i)
		b, err := os.ReadFile(c.Resolve(p))
		if err != nil {
			add(key, "cannot read %s: %v", c.Resolve(p), unwrapPathError(err))
			continue
		}
		k, err := fleet.ParsePublicKey(string(b))
		if err != nil {
			add(key, "%s: %v", c.Resolve(p), err)
			continue
		}
		f.PublicKeys = append(f.PublicKeys, k)
	}
	return errs
}
