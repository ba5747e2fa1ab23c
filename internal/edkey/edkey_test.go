package edkey

import (
	"crypto/ed25519"
	"strings"
	"testing"
)

func TestKinds(t *testing.T) {
	fw, fleet := Kind{Name: "firmware", Tag: "fw"}, Kind{Name: "fleet", Tag: "fleet"}
	pub, priv, err := fw.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub, "moongate-fw-pub:") || !strings.HasPrefix(priv, "moongate-fw-priv:") {
		t.Fatalf("prefixes: %s %s", pub, priv)
	}
	k, err := fw.Public(pub + "\n")
	if err != nil {
		t.Fatal(err)
	}
	p, err := fw.Private(priv)
	if err != nil || !p.Public().(ed25519.PublicKey).Equal(k) {
		t.Fatalf("the private key does not go with the public one: %v", err)
	}
	for _, bad := range []func() error{
		func() error { _, err := fw.Public(priv); return err },
		func() error { _, err := fw.Private(pub); return err },
		func() error { _, err := fleet.Public(pub); return err },
		func() error { _, err := fw.Public(pub[:len(pub)-4]); return err },
	} {
		if bad() == nil {
			t.Error("a wrong key was taken")
		}
	}
}
