package memguard

import (
	"runtime"
	"testing"
)

// Pressure follows the live heap against the limit, with a gap between on and off.
func TestGuardFollowsLiveHeap(t *testing.T) {
	var changes []bool
	g := New(func(p bool, _, _ int64) { changes = append(changes, p) })
	var limit int64 = 1 << 40 // far above anything this test holds
	g.limit = func() int64 { return limit }
	g.Check()
	if g.Pressed() {
		t.Fatal("pressed with a live heap far under the limit")
	}
	hold := make([]byte, 64<<20) // kept live across the collection below
	runtime.GC()
	g.Check()
	live := int64(g.Live())
	if live < 64<<20 {
		t.Fatalf("live heap %d, below what the test holds", live)
	}
	limit = live * 100 / 80 // live is 80% of the limit: past High
	g.Check()
	if !g.Pressed() {
		t.Fatalf("not pressed at 80%% of the limit")
	}
	limit = live * 100 / 70 // 70%: between Low and High, still pressed
	g.Check()
	if !g.Pressed() {
		t.Fatal("pressure ended above Low")
	}
	limit = live * 2 // 50%
	g.Check()
	if g.Pressed() {
		t.Fatal("still pressed at half the limit")
	}
	limit = 0 // no limit
	g.Check()
	if g.Pressed() || len(changes) != 2 || !changes[0] || changes[1] {
		t.Fatalf("changes %v", changes)
	}
	runtime.KeepAlive(hold)
}
