//go:build linux && (amd64 || arm64)

package store

import (
	"flag"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/powercut"
)

var powerTear = flag.Bool("powercut.tear", true,
	"TestPowerCut: also tear the last page written to each file since its last sync")

// TestPowerCut is TestCrashKill9 on a filesystem that simulates a power cut
// (internal/powercut): after each kill, everything the child wrote and did not
// make durable by fsync, msync or an fsync of the directory is dropped. Every
// commit the child reported (Commit returned nil) must be there, and nothing of
// one it did not report. The records are large enough to live in the value log,
// so a commit spans the value log and the WAL; the last page written to each file is
// torn, which once brought an unreported commit back half applied (torn.go).
func TestPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	base := t.TempDir()
	disk, mnt := filepath.Join(base, "disk"), filepath.Join(base, "mnt")
	for _, d := range []string{disk, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	pfs, err := powercut.Mount(disk, mnt, powercut.Options{Tear: *powerTear, Rand: rand.New(rand.NewPCG(seed, seed>>1|1))})
	if err != nil {
		t.Fatalf("mount the power-cut filesystem (needs /dev/fuse): %v", err)
	}
	defer pfs.Close()
	dir := filepath.Join(mnt, "store")
	crashRounds(t, dir, []string{crashBigEnv + "=1"}, func(round int) string {
		files, dirOps := pfs.Pending()
		if err := pfs.Cut(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		t.Logf("round %d: power cut; unsynced writes of %d files and %d directory changes dropped", round, files, dirOps)
		// Checked on a copy, made by another process: this one serves the mount and
		// must not map its files (see internal/powercut).
		cp := filepath.Join(t.TempDir(), "store")
		if out, err := exec.Command("cp", "-a", "--sparse=always", dir, cp).CombinedOutput(); err != nil {
			t.Fatalf("round %d: copy the store: %v: %s", round, err, out)
		}
		return cp
	})
}
