package specdoc

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestCitedSectionsExist: a comment or doc that cites "SPEC §N" points at a section
// docs/SPEC.md has, and the spec's relative links lead to files that exist.
func TestCitedSectionsExist(t *testing.T) {
	spec, err := find()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(filepath.Dir(spec))
	cite := regexp.MustCompile(`SPEC §(\d+)`)
	cited := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "third_party" || strings.HasPrefix(d.Name(), ".") && path != root) {
			return filepath.SkipDir
		}
		if ext := filepath.Ext(path); d.IsDir() || ext != ".go" && ext != ".md" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range cite.FindAllStringSubmatch(string(data), -1) {
			n, _ := strconv.Atoi(m[1])
			if _, err := Section(n); err != nil {
				t.Errorf("%s cites SPEC §%d: %v", path, n, err)
			}
			cited++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cited == 0 {
		t.Fatal("no SPEC §N citation found: is the walk in the right place?")
	}

	data, err := os.ReadFile(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\]\(([^)#:]+)(#[^)]*)?\)`).FindAllStringSubmatch(string(data), -1) {
		if _, err := os.Stat(filepath.Join(filepath.Dir(spec), m[1])); err != nil {
			t.Errorf("docs/SPEC.md links to %s: %v", m[1], err)
		}
	}
}
