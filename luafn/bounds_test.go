package luafn

import (
	"strings"
	"testing"
	"time"
)

func TestBoundsQuick(t *testing.T) {
	cases := []struct {
		name string
		src  string
		kind error
	}{
		{"loop", `while true do end`, ErrTimeout},
		{"rep", `local s = string.rep("x", 1e9)`, ErrMemory},
		{"doubling", `local s = "x" for i = 1, 40 do s = s .. s end`, ErrMemory},
		{"tablegrow", `local t = {} for i = 1, 1e8 do t[i] = i end`, ErrMemory},
		{"sparse", `local t = {} t[60000000] = 1`, ErrMemory},
		{"concat", `local t = {} for i = 1, 100 do t[i] = string.rep("x", 100000) end local s = table.concat(t, string.rep("y", 1000000))`, ErrMemory},
		{"format", `local s = string.format("%099999d", 1)`, ErrRuntime},
		{"recursion", `local function f() return 1 + f() end f()`, ErrDepth},
		{"pattern", `string.find(string.rep("a", 400), ".-.-.-b")`, ErrPattern},
		{"unpack", `local t = {} unpack(t, 1, 1e8)`, ErrRegistry},
		{"strkeys", `local t = {} for i = 1, 1e8 do t["k" .. i] = true end`, ErrMemory},
		{"manyconcat", `local s = string.rep("x", 1e6) local t = s..s..s..s..s..s..s..s..s..s..s..s..s..s..s..s..s..s..s..s`, ErrMemory},
		{"globals", `for i = 1, 1e8 do _G["g" .. i] = {} end`, ErrMemory},
		{"closures", `local t = {} for i = 1, 1e8 do t[i] = function() return i end end`, ErrMemory},
		{"pcall_loop", `while true do pcall(string.rep, "x", 1e10) end`, ErrMemory},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFn(t, "function handle(event) "+c.src+" end", Limits{Timeout: 2 * time.Second}, Host{})
			start := time.Now()
			ie := callErr(t, f, nil, c.kind)
			t.Logf("%v in %v (%v)", ie, time.Since(start), strings.ReplaceAll(ie.Traceback, "\n", " | "))
		})
	}
}
