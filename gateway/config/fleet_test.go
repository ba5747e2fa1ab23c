package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moongate/moongate/fleet"
)

func TestFleetSection(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := fleet.Keygen()
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"fleet.pub": pub + "\n", "fleet.key": priv + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "moongate.yaml")
	c, err := Parse(path, []byte("gateway: {id: pi-1}\nfleet: {broker: tcp://cloud:1883, groups: [lab, greenhouses], keys: [fleet.pub]}\n"))
	if err != nil || len(c.Fleet.PublicKeys) != 1 {
		t.Fatalf("a good fleet section: %v, %d keys", err, len(c.Fleet.PublicKeys))
	}
	_, err = Parse(path, []byte(`gateway: {id: "pi 1"}
fleet: {broker: "http://cloud", groups: [lab, lab, "a/b"], keys: [fleet.key, missing.pub]}
`))
	if err == nil {
		t.Fatal("a bad fleet section loaded")
	}
	for _, want := range []string{"gateway.id", "fleet.broker", "fleet.groups[1]: duplicate", "fleet.groups[2]", "fleet.keys[0]", "fleet.keys[1]: cannot read"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no error at %s in:\n%v", want, err)
		}
	}
	if _, err := Parse(path, []byte("fleet: {groups: [lab]}\n")); err == nil || !strings.Contains(err.Error(), "fleet.broker") {
		t.Errorf("groups without a broker: %v", err)
	}
	if _, err := Parse(path, []byte("fleet: {broker: tcp://cloud:1883}\n")); err == nil || !strings.Contains(err.Error(), "fleet.keys") {
		t.Errorf("a broker without keys: %v", err)
	}
}
