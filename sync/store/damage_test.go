package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A data dir whose MANIFEST is gone is refused, and its tables stay: Badger alone would
// start an empty store and delete them.
func TestMissingManifestRefused(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	for i := range 2000 {
		mustCommit(t, s, Commit{Namespace: "fn", KV: []KVOp{{Kind: OpSet, Key: "k" + strings.Repeat("x", i%50) + string(rune('a'+i%26)), Value: []byte(`1`)}}})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := filepath.Glob(filepath.Join(dir, "*"))
	if err := os.Remove(filepath.Join(dir, "MANIFEST")); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: dir})
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "MANIFEST is missing") || !strings.Contains(err.Error(), ".damaged") {
		t.Fatalf("open without a MANIFEST: %v", err)
	}
	after, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(after) != len(before)-1 {
		t.Fatalf("files before %v, after %v: the refusal changed the dir", before, after)
	}
}
