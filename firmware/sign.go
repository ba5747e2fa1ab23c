// Package firmware handles firmware images for MQTT devices (SPEC §8). This part signs and
// verifies images with ed25519: the gateway refuses to offer an image whose signature does
// not verify against the operator's public key. The over-the-air rollout builds on it.
package firmware

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrBadSignature is returned when an image's signature does not verify.
var ErrBadSignature = errors.New("firmware: signature does not verify")

// Keys are written as one line of base64, prefixed so a private key is never mistaken for
// a public one.
const (
	publicPrefix  = "moongate-fw-pub:"
	privatePrefix = "moongate-fw-priv:"
)

// Keygen makes a signing key pair, encoded for files: the private key for the build
// machine, the public key for the gateways.
func Keygen() (public, private string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	return publicPrefix + base64.StdEncoding.EncodeToString(pub),
		privatePrefix + base64.StdEncoding.EncodeToString(priv.Seed()), nil
}

// Manifest describes a signed image: what an offer carries (SPEC §8).
type Manifest struct {
	Type      string `json:"type"`
	Version   string `json:"version"`
	Size      int    `json:"size"`
	SHA256    string `json:"sha256"`
	Signature string `json:"signature"` // base64 ed25519 over the signed message
}

// signedMessage binds the signature to the device type and version as well as the bytes,
// so a valid image cannot be replayed as another version or for another device type.
func signedMessage(typ, version string, digest [32]byte) []byte {
	return fmt.Appendf(nil, "moongate-fw-v1\n%s\n%s\n%x\n", typ, version, digest)
}

// Sign signs image as version of device type typ with an encoded private key.
func Sign(image []byte, typ, version, private string) (Manifest, error) {
	seed, err := decodeKey(private, privatePrefix, ed25519.SeedSize)
	if err != nil {
		return Manifest{}, err
	}
	if typ == "" || version == "" || strings.ContainsRune(typ+version, '\n') {
		return Manifest{}, errors.New("firmware: type and version are required, on one line each")
	}
	digest := sha256.Sum256(image)
	sig := ed25519.Sign(ed25519.NewKeyFromSeed(seed), signedMessage(typ, version, digest))
	return Manifest{Type: typ, Version: version, Size: len(image), SHA256: hex.EncodeToString(digest[:]),
		Signature: base64.StdEncoding.EncodeToString(sig)}, nil
}

// Verify checks image against its manifest and an encoded public key.
func Verify(image []byte, m Manifest, public string) error {
	pub, err := decodeKey(public, publicPrefix, ed25519.PublicKeySize)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(image)
	if len(image) != m.Size || hex.EncodeToString(digest[:]) != m.SHA256 {
		return fmt.Errorf("%w: the image's size or sha256 differs from the manifest", ErrBadSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: malformed signature", ErrBadSignature)
	}
	if !ed25519.Verify(pub, signedMessage(m.Type, m.Version, digest), sig) {
		return ErrBadSignature
	}
	return nil
}

func decodeKey(s, prefix string, size int) ([]byte, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, prefix) {
		return nil, fmt.Errorf("firmware: not a %skey", prefix)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, prefix))
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("firmware: malformed %skey", prefix)
	}
	return b, nil
}
