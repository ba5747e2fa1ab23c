package lua

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestTableStringKeysModel runs random sets, deletes, reads and walks (with deletes
// and updates during the walk, as Lua allows) on tables against a Go map, across the
// move from the small part to the map.
func TestTableStringKeysModel(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		tb := newLTable(0, rng.IntN(12))
		model := map[string]LValue{}
		keys := rng.IntN(20) + 1
		for step := range 300 {
			k := fmt.Sprintf("k%d", rng.IntN(keys))
			switch op := rng.IntN(10); {
			case op < 5:
				v := LNumber(rng.IntN(100))
				tb.RawSetString(k, v)
				model[k] = v
			case op < 7:
				tb.RawSetString(k, LNil)
				delete(model, k)
			case op < 8:
				tb.RawSet(LString(k), LTrue) // through the generic path
				model[k] = LTrue
			case op < 9: // a full walk, deleting and updating some keys as it goes
				seen := map[string]LValue{}
				for key, v := tb.Next(LNil); key != LNil; key, v = tb.Next(key) {
					ks := string(key.(LString))
					if _, twice := seen[ks]; twice {
						t.Fatalf("seed %d step %d: %s walked twice", seed, step, ks)
					}
					if want := model[ks]; v != want {
						t.Fatalf("seed %d step %d: walk %s = %v, want %v", seed, step, ks, v, want)
					}
					seen[ks] = v
					switch rng.IntN(4) {
					case 0:
						tb.RawSetString(ks, LNil)
						delete(model, ks)
					case 1:
						tb.RawSetString(ks, LFalse)
						model[ks] = LFalse
					}
				}
				for k := range model { // no key was added during the walk
					if _, ok := seen[k]; !ok {
						t.Fatalf("seed %d step %d: walk missed %s", seed, step, k)
					}
				}
			default:
				var n int
				tb.ForEach(func(LValue, LValue) { n++ })
				if n != len(model) {
					t.Fatalf("seed %d step %d: ForEach saw %d keys, want %d", seed, step, n, len(model))
				}
			}
			for k := range keys {
				key := fmt.Sprintf("k%d", k)
				want, ok := model[key]
				if !ok {
					want = LNil
				}
				if got := tb.RawGetString(key); got != want {
					t.Fatalf("seed %d step %d: %s = %v, want %v", seed, step, key, got, want)
				}
				if got := tb.RawGet(LString(key)); got != want {
					t.Fatalf("seed %d step %d: RawGet %s = %v, want %v", seed, step, key, got, want)
				}
			}
			if _, strs, _ := tb.Parts(); strs.Len() != len(model) {
				t.Fatalf("seed %d step %d: %d string keys, want %d", seed, step, strs.Len(), len(model))
			}
		}
	}
}

// TestTableSmallPartMoves checks where string keys live: in the slice up to
// SmallStrKeys, in a map from the next one on, for good.
func TestTableSmallPartMoves(t *testing.T) {
	tb := newLTable(0, 0)
	for i := range SmallStrKeys {
		tb.RawSetString(fmt.Sprint(i), LNumber(i))
	}
	if _, strs, _ := tb.Parts(); strs.Large() || strs.Len() != SmallStrKeys {
		t.Fatalf("%d keys: large %v, len %d", SmallStrKeys, strs.Large(), strs.Len())
	}
	tb.RawSetString("one more", LTrue)
	_, strs, _ := tb.Parts()
	if !strs.Large() || strs.Len() != SmallStrKeys+1 {
		t.Fatalf("%d keys: large %v, len %d", SmallStrKeys+1, strs.Large(), strs.Len())
	}
	for i := range SmallStrKeys {
		tb.RawSetString(fmt.Sprint(i), LNil)
	}
	if _, strs, _ := tb.Parts(); !strs.Large() || strs.Len() != 1 {
		t.Fatal("a table went back to the small part")
	}
	if big := newLTable(0, SmallStrKeys+1); big.strdict == nil {
		t.Fatal("a table made for more keys than the small part holds has no map")
	}
}
