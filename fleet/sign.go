package fleet

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrBadSignature is returned when a document's signature verifies against none of the
// trusted keys.
var ErrBadSignature = errors.New("fleet: signature does not verify")

// Keys are one line of base64 each, written like the firmware keys (firmware.Keygen), with
// their own prefixes: a firmware key is never taken for a fleet key, nor the reverse.
const (
	publicPrefix  = "moongate-fleet-pub:"
	privatePrefix = "moongate-fleet-priv:"
)

// Keygen makes a fleet key pair, encoded for files: the private key for the operator's
// machine, the public key for the gateways (fleet.keys).
func Keygen() (public, private string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	return publicPrefix + base64.StdEncoding.EncodeToString(pub),
		privatePrefix + base64.StdEncoding.EncodeToString(priv.Seed()), nil
}

// PublicKey is a decoded fleet public key.
type PublicKey ed25519.PublicKey

// ParsePublicKey decodes a key written by Keygen.
func ParsePublicKey(s string) (PublicKey, error) {
	b, err := decodeKey(s, publicPrefix, ed25519.PublicKeySize)
	return PublicKey(b), err
}

func decodeKey(s, prefix string, size int) ([]byte, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, prefix) {
		return nil, fmt.Errorf("fleet: not a %skey", prefix)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, prefix))
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("fleet: malformed %skey", prefix)
	}
	return b, nil
}

// Signed is what is retained on a desired topic: a document's exact bytes and their
// signature.
type Signed struct {
	Document  json.RawMessage `json:"document"`
	Signature string          `json:"signature"` // base64 ed25519 over signedMessage
}

// signedMessage separates fleet signatures from every other use of an ed25519 key.
func signedMessage(doc []byte) []byte {
	return append([]byte("moongate-fleet-v1\n"), doc...)
}

// Sign checks a document (Parse) and signs its bytes as they are with an encoded private
// key. The document is compacted first, so the envelope holds it on one line.
func Sign(doc []byte, private string) (Signed, error) {
	seed, err := decodeKey(private, privatePrefix, ed25519.SeedSize)
	if err != nil {
		return Signed{}, err
	}
	if _, err := Parse(doc); err != nil {
		return Signed{}, err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, doc); err != nil {
		return Signed{}, fmt.Errorf("fleet: document: %w", err)
	}
	b := compact.Bytes()
	sig := ed25519.Sign(ed25519.NewKeyFromSeed(seed), signedMessage(b))
	return Signed{Document: b, Signature: base64.StdEncoding.EncodeToString(sig)}, nil
}

// Verify decodes a retained payload, checks its signature against the trusted keys, and
// parses the document that verified.
func Verify(payload []byte, keys []PublicKey) (*Document, error) {
	var s Signed
	if err := json.Unmarshal(payload, &s); err != nil {
		return nil, fmt.Errorf("fleet: not a signed document: %w", err)
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: malformed signature", ErrBadSignature)
	}
	msg := signedMessage(s.Document)
	for _, k := range keys {
		if ed25519.Verify(ed25519.PublicKey(k), msg, sig) {
			return Parse(s.Document)
		}
	}
	return nil, ErrBadSignature
}
