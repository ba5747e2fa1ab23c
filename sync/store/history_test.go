package store

import (
	"fmt"
	"testing"
)

// The history reads a page at a time, newest first, and pruning keeps the newest.
func TestVersionHistoryPagesAndPrunes(t *testing.T) {
	s := openTest(t, Options{})
	for v := 1; v <= 30; v++ {
		if err := s.PutVersion("f", v, []byte(fmt.Sprint(v))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutVersion("fg", 99, []byte("other")); err != nil { // a name that f prefixes
		t.Fatal(err)
	}
	if n, err := s.LatestVersion("f"); err != nil || n != 30 {
		t.Fatalf("latest %d %v", n, err)
	}
	page := func(before, limit int) string {
		blobs, more, err := s.VersionPage("f", before, limit)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s more=%v", blobs, more)
	}
	for _, c := range []struct {
		before, limit int
		want          string
	}{
		{0, 3, "[30 29 28] more=true"},
		{28, 3, "[27 26 25] more=true"},
		{3, 3, "[2 1] more=false"},
		{1, 3, "[] more=false"},
	} {
		if got := page(c.before, c.limit); got != c.want {
			t.Errorf("page before %d: %s, want %s", c.before, got, c.want)
		}
	}
	if n, err := s.PruneVersions("f", 5); err != nil || n != 25 {
		t.Fatalf("pruned %d %v", n, err)
	}
	if got := page(0, 10); got != "[30 29 28 27 26] more=false" {
		t.Errorf("after pruning: %s", got)
	}
	if _, ok, _ := s.Version("f", 3); ok {
		t.Error("version 3 is still there")
	}
	if b, ok, err := s.Version("f", 28); !ok || err != nil || string(b) != "28" {
		t.Errorf("version 28: %q %v %v", b, ok, err)
	}
	if n, _ := s.LatestVersion("fg"); n != 99 {
		t.Errorf("the other function's latest: %d", n)
	}
}
