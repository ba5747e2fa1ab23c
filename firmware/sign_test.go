package firmware

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func testSigning() Signing {
	return Signing{Type: "esp32-env", Version: "1.2.0", Counter: 7, Expires: testNow.Add(24 * time.Hour)}
}

func TestSignVerify(t *testing.T) {
	pub, priv, err := Keygen()
	if err != nil {
		t.Fatal(err)
	}
	image := []byte(strings.Repeat("firmware bytes ", 1000))
	m, err := Sign(image, testSigning(), priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(image, m, pub, testNow); err != nil {
		t.Fatalf("a good image does not verify: %v", err)
	}
	otherPub, _, _ := Keygen()
	tampered := append([]byte{}, image...)
	tampered[7] ^= 1
	relabelled := m
	relabelled.Version = "9.9.9"
	otherType := m
	otherType.Type = "esp32-cam"
	bumped := m
	bumped.Counter = 8
	extended := m
	extended.Expires = m.Expires.Add(time.Hour)
	for name, c := range map[string]struct {
		image []byte
		m     Manifest
		pub   string
		now   time.Time
		want  error
	}{
		"tampered image":    {tampered, m, pub, testNow, ErrDigest},
		"truncated image":   {image[:100], m, pub, testNow, ErrSize},
		"replayed version":  {image, relabelled, pub, testNow, ErrBadSignature},
		"other device type": {image, otherType, pub, testNow, ErrBadSignature},
		"raised counter":    {image, bumped, pub, testNow, ErrBadSignature},
		"extended expiry":   {image, extended, pub, testNow, ErrBadSignature},
		"other key":         {image, m, otherPub, testNow, ErrBadSignature},
		"expired":           {image, m, pub, m.Expires, ErrExpired},
	} {
		if err := Verify(c.image, c.m, c.pub, c.now); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
	if err := Verify(image, m, priv, testNow); err == nil {
		t.Error("a private key was accepted as a public one")
	}
	s := testSigning()
	s.Type = ""
	if _, err := Sign(image, s, priv); err == nil {
		t.Error("signed without a device type")
	}
	s = testSigning()
	s.Counter = 0
	if _, err := Sign(image, s, priv); err == nil {
		t.Error("signed without a counter")
	}
}

func TestManifestRoundTrip(t *testing.T) {
	pub, priv, _ := Keygen()
	image := []byte("image")
	m, err := Sign(image, testSigning(), priv)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	got, err := ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ParsePublicKey(pub)
	if err := got.Check(int64(len(image)), sha256.Sum256(image), []PublicKey{k}, testNow); err != nil {
		t.Fatalf("a parsed manifest does not verify: %v", err)
	}
}

// A manifest written before counters and expiries is refused with its own reason.
func TestOldManifestRefused(t *testing.T) {
	old := `{"type":"esp32-env","version":"1.2.0","size":11,"sha256":"` + strings.Repeat("ab", 32) + `","signature":"` + strings.Repeat("A", 88) + `"}`
	if _, err := ParseManifest([]byte(old)); !errors.Is(err, ErrOldManifest) {
		t.Fatalf("an old manifest: got %v, want ErrOldManifest", err)
	}
}

func FuzzParseManifest(f *testing.F) {
	pub, priv, _ := Keygen()
	k, _ := ParsePublicKey(pub)
	m, _ := Sign([]byte("img"), testSigning(), priv)
	good, _ := json.Marshal(m)
	f.Add(good)
	f.Add([]byte(`{"type":"t","version":"1","counter":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		// A manifest that parses checks without panicking, and only a signed one passes.
		if m.Check(m.Size, sha256.Sum256([]byte("img")), []PublicKey{k}, testNow) == nil && string(b) != string(good) {
			re, _ := json.Marshal(m)
			if string(re) != string(good) {
				t.Fatalf("a manifest that was not signed verifies: %s", b)
			}
		}
	})
}

// The health window is signed: a manifest cannot be given a longer one, or have it
// removed to pass as the older format. A manifest of the older format (moongate-fw-v2,
// no window) still verifies, with the default window.
func TestHealthWindowIsSigned(t *testing.T) {
	pub, priv, _ := Keygen()
	image := []byte("firmware")
	s := testSigning()
	s.HealthWindow = 5 * time.Minute
	m, err := Sign(image, s, priv)
	if err != nil {
		t.Fatal(err)
	}
	if m.HealthWindow != 300 || m.Window() != 5*time.Minute {
		t.Fatalf("window %d s (%s), want 300 s", m.HealthWindow, m.Window())
	}
	longer, stripped := m, m
	longer.HealthWindow = 3600
	stripped.HealthWindow = 0
	for name, bad := range map[string]Manifest{"longer window": longer, "window removed": stripped} {
		if err := Verify(image, bad, pub, testNow); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: got %v, want %v", name, err, ErrBadSignature)
		}
	}
	if d, _ := Sign(image, testSigning(), priv); d.Window() != DefaultHealthWindow || d.HealthWindow != int64(DefaultHealthWindow/time.Second) {
		t.Errorf("Sign without a window wrote %d s, want the default %s", d.HealthWindow, DefaultHealthWindow)
	}
	s.HealthWindow = 1500 * time.Millisecond
	if _, err := Sign(image, s, priv); !errors.Is(err, ErrManifest) {
		t.Errorf("a window of 1.5 s: got %v, want %v", err, ErrManifest)
	}

	// A v2 manifest: what Sign wrote before the field, signed over the v2 message.
	key, _ := keys.Private(priv)
	v2 := m
	v2.HealthWindow = 0
	v2.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, v2.signedMessage(sha256.Sum256(image))))
	if err := Verify(image, v2, pub, testNow); err != nil || v2.Window() != DefaultHealthWindow {
		t.Errorf("a v2 manifest: %v, window %s; want it verified with %s", err, v2.Window(), DefaultHealthWindow)
	}
}
