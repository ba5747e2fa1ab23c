package firmware

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// The store keeps what was published across a reopen, drops what a crash left half
// written, and refuses past its quota and a reused counter.
func TestImagesAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	pub, priv, _ := Keygen()
	k, _ := ParsePublicKey(pub)
	open := func() *Images {
		s, err := OpenImages(dir, 3000, []PublicKey{k}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	image := bytes.Repeat([]byte("a"), 2000)
	m, _ := Sign(image, testSigning(), priv)
	if err := s.Add(m, bytes.NewReader(image), testNow); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(m, bytes.NewReader(image), testNow); err != nil {
		t.Errorf("publishing the same image again: %v", err)
	}
	other := bytes.Repeat([]byte("b"), 2000)
	reused, _ := Sign(other, testSigning(), priv)
	if err := s.Add(reused, bytes.NewReader(other), testNow); !errors.Is(err, ErrExists) {
		t.Errorf("a reused counter: %v", err)
	}
	next := testSigning()
	next.Counter++
	big, _ := Sign(other, next, priv)
	if err := s.Add(big, bytes.NewReader(other), testNow); !errors.Is(err, ErrQuota) {
		t.Errorf("past the quota: %v", err)
	}
	s.Close()
	// A publish that died between the image and its manifest.
	if err := os.WriteFile(filepath.Join(dir, "esp32-env", "99.bin"), other, 0o644); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	if l := s.List(); len(l) != 1 || l[0].Counter != m.Counter {
		t.Fatalf("after a reopen: %+v", l)
	}
	if _, err := os.Stat(filepath.Join(dir, "esp32-env", "99.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the half-published image is still there: %v", err)
	}
	buf := make([]byte, 10)
	if _, err := s.ReadAt(m.Type, m.Counter, buf, 1990); err != nil || !bytes.Equal(buf, image[1990:]) {
		t.Errorf("ReadAt the end: %q %v", buf, err)
	}
	if got, ok := s.Newest(m.Type, m.Counter, testNow); ok {
		t.Errorf("Newest above the only counter: %+v", got)
	}
}
