// Package edkey writes and reads ed25519 keys for files: one line of base64 behind a
// prefix that says what the key is for and which half it is ("moongate-fw-pub:"), so a
// private key is never taken for a public one, nor a firmware key for a fleet key.
package edkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// Kind is one use of keys: Tag goes in the prefixes, Name before every error.
type Kind struct {
	Name string // "firmware"
	Tag  string // "fw": moongate-fw-pub:, moongate-fw-priv:
}

func (k Kind) publicPrefix() string  { return "moongate-" + k.Tag + "-pub:" }
func (k Kind) privatePrefix() string { return "moongate-" + k.Tag + "-priv:" }

// Generate makes a key pair, encoded: the private key is its seed.
func (k Kind) Generate() (public, private string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	return k.publicPrefix() + base64.StdEncoding.EncodeToString(pub),
		k.privatePrefix() + base64.StdEncoding.EncodeToString(priv.Seed()), nil
}

// Public decodes an encoded public key.
func (k Kind) Public(s string) (ed25519.PublicKey, error) {
	b, err := k.decode(s, k.publicPrefix(), ed25519.PublicKeySize)
	return ed25519.PublicKey(b), err
}

// Private decodes an encoded private key.
func (k Kind) Private(s string) (ed25519.PrivateKey, error) {
	seed, err := k.decode(s, k.privatePrefix(), ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func (k Kind) decode(s, prefix string, size int) ([]byte, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, prefix) {
		return nil, fmt.Errorf("%s: not a %skey", k.Name, prefix)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, prefix))
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("%s: malformed %skey", k.Name, prefix)
	}
	return b, nil
}
