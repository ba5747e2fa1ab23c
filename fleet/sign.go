package fleet

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/moongate/moongate/internal/edkey"
)

// ErrBadSignature is returned when a document's signature verifies against none of the
// trusted keys.
var ErrBadSignature = errors.New("fleet: signature does not verify")

// keys are written like the firmware keys, with their own prefixes
// (moongate-fleet-pub:, moongate-fleet-priv:): a firmware key is never taken for a fleet
// key, nor the reverse.
var keys = edkey.Kind{Name: "fleet", Tag: "fleet"}

// Keygen makes a fleet key pair, encoded for files: the private key for the operator's
// machine, the public key for the gateways (fleet.keys).
func Keygen() (public, private string, err error) { return keys.Generate() }

// PublicKey is a decoded fleet public key.
type PublicKey ed25519.PublicKey

// ParsePublicKey decodes a key written by Keygen.
func ParsePublicKey(s string) (PublicKey, error) {
	k, err := keys.Public(s)
	return PublicKey(k), err
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
	priv, err := keys.Private(private)
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
	sig := ed25519.Sign(priv, signedMessage(b))
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
