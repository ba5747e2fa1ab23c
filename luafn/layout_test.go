package luafn

import "testing"

// TestLayout fails when gopher-lua's internals no longer match the mirrors the hook reads.
func TestLayout(t *testing.T) {
	if errLayout != nil {
		t.Fatal(errLayout)
	}
}
