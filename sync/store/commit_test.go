package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// Concurrent commits share groups; all are visible after a reopen; a failing
// commit in a group leaves nothing and does not fail the others.
func TestGroupCommitConcurrent(t *testing.T) {
	s := openTest(t, Options{})
	mustCommit(t, s, Commit{Namespace: "g", KV: []KVOp{{Kind: OpSet, Key: "text", Value: []byte(`"not a number"`)}}})
	const writers, each = 32, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	var okCount, failCount int
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				c := Commit{Namespace: "g",
					KV:      []KVOp{{Kind: OpIncr, Key: "n", Delta: 1}, {Kind: OpIncr, Key: fmt.Sprintf("w%d", w), Delta: 1}},
					Records: []Append{{Stream: "s", Data: fmt.Appendf(nil, `{"w":%d,"i":%d}`, w, i)}},
				}
				bad := i%10 == 3
				if bad {
					// Fails on its last op: its earlier ops and its record must vanish too.
					c.KV = append(c.KV, KVOp{Kind: OpIncr, Key: "text", Delta: 1})
				}
				err := s.Commit(context.Background(), c)
				mu.Lock()
				switch {
				case bad && errors.Is(err, ErrNotNumber):
					failCount++
				case !bad && err == nil:
					okCount++
				default:
					t.Errorf("writer %d commit %d (bad=%v): %v", w, i, bad, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	t.Logf("%d ok, %d failed; stats: %d commits in %d groups, %d fsyncs", okCount, failCount, st.Commits, st.Groups, st.Fsyncs)
	if st.Fsyncs >= uint64(okCount) {
		t.Errorf("%d fsyncs for %d commits: no group commit", st.Fsyncs, okCount)
	}

	s = reopen(t, s)
	if got := getKV(t, s, "g", "n"); got != fmt.Sprint(okCount) {
		t.Errorf("counter = %s, want %d", got, okCount)
	}
	recs, err := s.Read("s", 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != okCount {
		t.Errorf("%d records, want %d", len(recs), okCount)
	}
	next := make(map[int]int)
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
		var d struct{ W, I int }
		if err := json.Unmarshal(r.Data, &d); err != nil {
			t.Fatal(err)
		}
		for next[d.W]%10 == 3 {
			next[d.W]++ // the failed ones
		}
		if d.I != next[d.W] {
			t.Errorf("writer %d: record %d where %d was expected (order or duplicate)", d.W, d.I, next[d.W])
		}
		next[d.W] = d.I + 1
	}
	for w := range writers {
		if got := getKV(t, s, "g", fmt.Sprintf("w%d", w)); got != fmt.Sprint(each-each/10) {
			t.Errorf("w%d = %s, want %d", w, got, each-each/10)
		}
	}
}

// A group larger than one Badger transaction is written in pieces, each
// commit whole.
func TestGroupSplitsAcrossTransactions(t *testing.T) {
	s := openTest(t, Options{})
	big := make([]byte, 0, 900)
	big = append(big, '"')
	for len(big) < 899 {
		big = append(big, 'x')
	}
	big = append(big, '"')
	var wg sync.WaitGroup
	const n = 400 // 400 commits of ~10 KiB: about 14 transactions
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := Commit{Namespace: "big"}
			for k := range 10 {
				c.KV = append(c.KV, KVOp{Kind: OpSet, Key: fmt.Sprintf("%d-%d", i, k), Value: big})
			}
			if err := s.Commit(context.Background(), c); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	keys, _ := s.KVKeys("big", "", 0)
	if len(keys) != n*10 {
		t.Errorf("%d keys, want %d", len(keys), n*10)
	}
	// One commit alone over the transaction limit fails whole.
	c := Commit{Namespace: "big"}
	for k := range 2000 {
		c.KV = append(c.KV, KVOp{Kind: OpSet, Key: fmt.Sprintf("huge-%d", k), Value: big})
	}
	if err := s.Commit(context.Background(), c); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized commit: %v, want ErrTooLarge", err)
	}
	if keys, _ := s.KVKeys("big", "huge-", 0); len(keys) != 0 {
		t.Errorf("%d keys of an oversized commit written", len(keys))
	}
}

func TestCommitRejectsBadInput(t *testing.T) {
	s := openTest(t, Options{})
	for name, c := range map[string]Commit{
		"no namespace":   {KV: []KVOp{{Kind: OpSet, Key: "a", Value: []byte("1")}}},
		"NUL namespace":  {Namespace: "a\x00b", KV: []KVOp{{Kind: OpSet, Key: "a", Value: []byte("1")}}},
		"not JSON":       {Namespace: "f", KV: []KVOp{{Kind: OpSet, Key: "a", Value: []byte("{")}}},
		"empty key":      {Namespace: "f", KV: []KVOp{{Kind: OpSet, Value: []byte("1")}}},
		"long key":       {Namespace: "f", KV: []KVOp{{Kind: OpSet, Key: string(make([]byte, MaxKeyLen+1)), Value: []byte("1")}}},
		"unknown op":     {Namespace: "f", KV: []KVOp{{Key: "a"}}},
		"record no JSON": {Namespace: "f", Records: []Append{{Stream: "s", Data: []byte("x")}}},
		"no stream":      {Namespace: "f", Records: []Append{{Data: []byte("1")}}},
	} {
		if err := s.Commit(context.Background(), c); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestIncr(t *testing.T) {
	for _, tc := range []struct {
		cur   string
		delta float64
		want  string
		err   error
	}{
		{"", 1, "1", nil},
		{"41", 1, "42", nil},
		{"-1.5", 0.25, "-1.25", nil},
		{"1e3", 1, "1001", nil},
		{"9007199254740992", 1, "9007199254740992", nil}, // 2^53+1 rounds to 2^53
		{`"7"`, 1, "", ErrNotNumber},
		{`{}`, 1, "", ErrNotNumber},
		{`true`, 1, "", ErrNotNumber},
		{"1e308", 1e308, "", ErrInvalid},
	} {
		var cur []byte
		if tc.cur != "" {
			cur = []byte(tc.cur)
		}
		got, err := incr(cur, tc.delta)
		if !errors.Is(err, tc.err) || (err == nil && string(got) != tc.want) {
			t.Errorf("incr(%s, %v) = %s, %v; want %s, %v", tc.cur, tc.delta, got, err, tc.want, tc.err)
		}
	}
}

func FuzzIncr(f *testing.F) {
	for _, seed := range []string{"0", "-1", "1.5e10", `"x"`, "null", "[1]", "-", "1e400"} {
		f.Add([]byte(seed), 1.0)
	}
	f.Fuzz(func(t *testing.T, cur []byte, delta float64) {
		if !json.Valid(cur) {
			return // stored values are always valid JSON
		}
		out, err := incr(cur, delta)
		if err != nil {
			return
		}
		var v float64
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("incr(%q, %v) = %q: not a JSON number: %v", cur, delta, out, err)
		}
	})
}
