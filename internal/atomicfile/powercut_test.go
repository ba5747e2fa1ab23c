//go:build linux && (amd64 || arm64)

package atomicfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moongate/moongate/internal/powercut"
)

// Through a power cut: the directories MkdirAll made are there, with what was synced in
// them; Write's file is there with its new content.
func TestPowerCut(t *testing.T) {
	base := t.TempDir()
	disk, mnt := filepath.Join(base, "disk"), filepath.Join(base, "mnt")
	os.Mkdir(disk, 0o755)
	os.Mkdir(mnt, 0o755)
	pfs, err := powercut.Mount(disk, mnt, powercut.Options{})
	if err != nil {
		t.Fatalf("mount the power-cut filesystem (needs /dev/fuse): %v", err)
	}
	defer pfs.Close()
	dir := filepath.Join(mnt, "data", "store")
	if err := MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "token"), []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pfs.Cut(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "token")); err != nil || string(b) != "one" {
		t.Fatalf("after the cut: %q, %v", b, err)
	}
}
