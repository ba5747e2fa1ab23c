package gateway

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Each example's data dir, whether moongate ran from the repository root or from the
// example's folder, is ignored by git and removed by `make clean`.
func TestExampleDataDirsIgnoredAndCleaned(t *testing.T) {
	t.Setenv("CLOUD_URL", "https://cloud.example.invalid/ingest") // the Pi configs need it
	clean, err := exec.Command("make", "-s", "-n", "-C", "..", "clean").Output()
	if err != nil {
		t.Skipf("make -n clean: %v", err)
	}
	scratch := t.TempDir() // the clean runs here, on copies of the paths, not on the tree
	var dirs []string
	for _, p := range exampleConfigs(t) {
		cfg := loadChecked(t, p)
		example := filepath.Base(filepath.Dir(p))
		for _, d := range []string{cfg.Gateway.DataDir, filepath.Join("examples", example, cfg.Gateway.DataDir)} {
			d = filepath.Clean(d)
			dirs = append(dirs, d)
			if err := os.MkdirAll(filepath.Join(scratch, d, "store"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, d := range dirs {
		if err := exec.Command("git", "-C", "..", "check-ignore", "-q", d+"/").Run(); err != nil {
			t.Errorf("%s is not in .gitignore (%v)", d, err)
		}
	}
	cmd := exec.Command("sh", "-c", strings.TrimSpace(string(clean)))
	cmd.Dir = scratch
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", clean, err, out)
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(scratch, d)); err == nil {
			t.Errorf("make clean leaves %s", d)
		}
	}
}
