package firmware

import (
	"errors"
	"strings"
	"testing"
)

func TestSignVerify(t *testing.T) {
	pub, priv, err := Keygen()
	if err != nil {
		t.Fatal(err)
	}
	image := []byte(strings.Repeat("firmware bytes ", 1000))
	m, err := Sign(image, "esp32-env", "1.2.0", priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(image, m, pub); err != nil {
		t.Fatalf("a good image does not verify: %v", err)
	}
	otherPub, _, _ := Keygen()
	tampered := append([]byte{}, image...)
	tampered[7] ^= 1
	relabelled := m
	relabelled.Version = "9.9.9"
	otherType := m
	otherType.Type = "esp32-cam"
	for name, c := range map[string]struct {
		image []byte
		m     Manifest
		pub   string
	}{
		"tampered image":    {tampered, m, pub},
		"replayed version":  {image, relabelled, pub},
		"other device type": {image, otherType, pub},
		"other key":         {image, m, otherPub},
	} {
		if err := Verify(c.image, c.m, c.pub); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: got %v, want ErrBadSignature", name, err)
		}
	}
	if err := Verify(image, m, priv); err == nil {
		t.Error("a private key was accepted as a public one")
	}
	if _, err := Sign(image, "", "1", priv); err == nil {
		t.Error("signed without a device type")
	}
}

func FuzzVerify(f *testing.F) {
	pub, priv, _ := Keygen()
	m, _ := Sign([]byte("img"), "t", "1", priv)
	f.Add([]byte("img"), m.Signature, m.SHA256, 3)
	f.Fuzz(func(t *testing.T, image []byte, sig, sum string, size int) {
		_ = Verify(image, Manifest{Type: "t", Version: "1", Size: size, SHA256: sum, Signature: sig}, pub)
	})
}
