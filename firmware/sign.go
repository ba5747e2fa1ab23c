// Package firmware handles firmware images for MQTT devices (SPEC §8): it signs and
// verifies manifests with ed25519, keeps the published images in the gateway's data dir
// (Images), and serves them to devices over MQTT (Server, the protocol of PROTOCOL.md).
//
// A manifest's signature covers the device type, the version name, a monotonic version
// counter, an expiry, the size and the sha256, so a valid image cannot be replayed as
// another type or version, offered after its expiry, or offered to a device that runs a
// newer one (the counter is what the downgrade check compares).
package firmware

import (
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/moongate/moongate/internal/edkey"
)

// The reasons an image or manifest is refused. Each error that Check, Verify and
// ParseManifest return wraps one of them.
var (
	ErrBadSignature = errors.New("firmware: signature does not verify")
	ErrDigest       = errors.New("firmware: the image's sha256 differs from the manifest")
	ErrSize         = errors.New("firmware: the image's size differs from the manifest")
	ErrExpired      = errors.New("firmware: the manifest has expired")
	// ErrOldManifest: a manifest signed before counters and expiries (moongate-fw-v1)
	// cannot be protected against replay or downgrade; it is refused, never guessed at.
	ErrOldManifest = errors.New("firmware: the manifest has no counter or expiry (signed by an older moongate): sign the image again with --counter and --expires")
	ErrManifest    = errors.New("firmware: malformed manifest")
)

// keys are written moongate-fw-pub:BASE64 and moongate-fw-priv:BASE64.
var keys = edkey.Kind{Name: "firmware", Tag: "fw"}

// Keygen makes a signing key pair, encoded for files: the private key for the build
// machine, the public key for the gateways.
func Keygen() (public, private string, err error) { return keys.Generate() }

// PublicKey is a decoded public key, one of those a gateway trusts.
type PublicKey ed25519.PublicKey

// ParsePublicKey decodes a key written by Keygen.
func ParsePublicKey(s string) (PublicKey, error) {
	k, err := keys.Public(s)
	return PublicKey(k), err
}

// Manifest describes a signed image: what an offer carries (SPEC §8, PROTOCOL.md).
type Manifest struct {
	Type    string `json:"type"`
	Version string `json:"version"` // the name people read: 1.2.0
	// Counter orders the versions of one type: an image is offered only to a device
	// whose running counter is lower.
	Counter uint64    `json:"counter"`
	Expires time.Time `json:"expires"` // no gateway offers the image after it
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256"`
	// HealthWindow is how long, in seconds, a device has after it applied the image to
	// report healthy; past it the gateway counts the attempt as failed. 0 in a manifest
	// signed before the field (moongate-fw-v2): DefaultHealthWindow.
	HealthWindow int64  `json:"health_window_seconds,omitempty"`
	Signature    string `json:"signature"` // base64 ed25519 over signedMessage
}

// DefaultHealthWindow is the health window of a manifest that names none, and what Sign
// writes when Signing has none.
const DefaultHealthWindow = 60 * time.Second

// MaxHealthWindow bounds the health window: a device that has not confirmed itself in a
// day will not.
const MaxHealthWindow = 24 * time.Hour

// Window is how long a device has to report healthy after applying the image.
func (m Manifest) Window() time.Duration {
	if m.HealthWindow == 0 {
		return DefaultHealthWindow
	}
	return time.Duration(m.HealthWindow) * time.Second
}

// Signing is what Sign puts in a manifest besides the image's size and digest.
type Signing struct {
	Type, Version string
	Counter       uint64
	Expires       time.Time
	HealthWindow  time.Duration // whole seconds; 0: DefaultHealthWindow
}

// MaxImageSize bounds an image: far more than a microcontroller's flash, and small enough
// that a size field cannot make anyone reserve the disk.
const MaxImageSize = 1 << 30

// signedMessage binds the signature to everything the gateway and the device decide on.
// The expiry is signed in whole seconds, as Sign writes it. A manifest with a health
// window signs it too (moongate-fw-v3); one without is of the format before the field
// (moongate-fw-v2), still taken with the default window. Removing the field from a v3
// manifest changes the message, so the signature no longer verifies.
func (m Manifest) signedMessage(digest [32]byte) []byte {
	if m.HealthWindow == 0 {
		return fmt.Appendf(nil, "moongate-fw-v2\n%s\n%s\n%d\n%d\n%d\n%x\n",
			m.Type, m.Version, m.Counter, m.Expires.Unix(), m.Size, digest)
	}
	return fmt.Appendf(nil, "moongate-fw-v3\n%s\n%s\n%d\n%d\n%d\n%x\n%d\n",
		m.Type, m.Version, m.Counter, m.Expires.Unix(), m.Size, digest, m.HealthWindow)
}

// Sign signs image with an encoded private key.
func Sign(image []byte, s Signing, private string) (Manifest, error) {
	priv, err := keys.Private(private)
	if err != nil {
		return Manifest{}, err
	}
	window := cmp.Or(s.HealthWindow, DefaultHealthWindow)
	if window%time.Second != 0 {
		return Manifest{}, fmt.Errorf("%w: the health window %s is not whole seconds", ErrManifest, window)
	}
	m := Manifest{Type: s.Type, Version: s.Version, Counter: s.Counter, Expires: s.Expires.UTC().Truncate(time.Second),
		Size: int64(len(image)), HealthWindow: int64(window / time.Second)}
	if err := m.checkFields(); err != nil {
		return Manifest{}, err
	}
	digest := sha256.Sum256(image)
	m.SHA256 = hex.EncodeToString(digest[:])
	m.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, m.signedMessage(digest)))
	return m, nil
}

func (m Manifest) checkFields() error {
	switch {
	case !validType(m.Type):
		return fmt.Errorf("%w: type %.70q is not 1 to 64 letters, digits, '.', '_' or '-' (not starting with '.')", ErrManifest, m.Type)
	case m.Version == "" || strings.ContainsAny(m.Version, "\n\x00"):
		return fmt.Errorf("%w: version is required, on one line", ErrManifest)
	case len(m.Version) > 64:
		return fmt.Errorf("%w: version is at most 64 bytes", ErrManifest)
	case m.Counter == 0 && m.Expires.IsZero():
		return ErrOldManifest
	case m.Counter == 0:
		return fmt.Errorf("%w: counter must be at least 1", ErrManifest)
	case m.Expires.IsZero():
		return fmt.Errorf("%w: no expiry", ErrManifest)
	case m.Size < 1 || m.Size > MaxImageSize:
		return fmt.Errorf("%w: size %d is not between 1 and %d bytes", ErrManifest, m.Size, MaxImageSize)
	case m.HealthWindow < 0 || m.HealthWindow > int64(MaxHealthWindow/time.Second):
		return fmt.Errorf("%w: health window %d s is negative or more than %s", ErrManifest, m.HealthWindow, MaxHealthWindow)
	}
	return nil
}

// validType: a device type names a directory of the image store and a level of nothing
// else, so it is kept to characters that are safe in both.
func validType(t string) bool {
	if t == "" || len(t) > 64 || t[0] == '.' {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// ParseManifest decodes a manifest file and checks its form (not its signature: Check
// does, with the image's digest).
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if err := m.checkFields(); err != nil {
		return Manifest{}, err
	}
	if _, err := m.Digest(); err != nil {
		return Manifest{}, err
	}
	if s, err := base64.StdEncoding.DecodeString(m.Signature); err != nil || len(s) != ed25519.SignatureSize {
		return Manifest{}, fmt.Errorf("%w: signature is not a base64 ed25519 signature", ErrManifest)
	}
	return m, nil
}

// Check decides whether an image of size bytes with sha256 digest may be offered under
// m at now: the size and digest match, m has not expired, and one of keys signed it.
func (m Manifest) Check(size int64, digest [32]byte, keys []PublicKey, now time.Time) error {
	if err := m.checkFields(); err != nil {
		return err
	}
	if size != m.Size {
		return fmt.Errorf("%w: %d bytes, the manifest says %d", ErrSize, size, m.Size)
	}
	if hex.EncodeToString(digest[:]) != m.SHA256 {
		return ErrDigest
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: malformed signature", ErrBadSignature)
	}
	signed := false
	for _, k := range keys {
		signed = signed || ed25519.Verify(ed25519.PublicKey(k), m.signedMessage(digest), sig)
	}
	if !signed {
		return fmt.Errorf("%w by any of the %d trusted keys", ErrBadSignature, len(keys))
	}
	// After the signature: an attacker's forged expiry should read as a forgery.
	if !now.Before(m.Expires) {
		return fmt.Errorf("%w: it expired at %s", ErrExpired, m.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}

// Digest is the sha256 the manifest states.
func (m Manifest) Digest() ([32]byte, error) {
	d, err := hex.DecodeString(m.SHA256)
	if err != nil || len(d) != sha256.Size {
		return [32]byte{}, fmt.Errorf("%w: sha256 is not 64 hex digits", ErrManifest)
	}
	return [32]byte(d), nil
}

// CheckSigned is Check against the manifest's own size and digest: whether it may be
// offered, before the image's bytes are read (they are checked against it later).
func (m Manifest) CheckSigned(keys []PublicKey, now time.Time) error {
	d, err := m.Digest()
	if err != nil {
		return err
	}
	return m.Check(m.Size, d, keys, now)
}

// Verify checks a whole image against its manifest and an encoded public key at now.
func Verify(image []byte, m Manifest, public string, now time.Time) error {
	pub, err := ParsePublicKey(public)
	if err != nil {
		return err
	}
	return m.Check(int64(len(image)), sha256.Sum256(image), []PublicKey{pub}, now)
}
