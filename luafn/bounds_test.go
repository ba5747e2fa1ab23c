package luafn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestBoundsConfigurable checks that each bound is the function's own setting and that
// its error names the bound and the function.
func TestBoundsConfigurable(t *testing.T) {
	cases := []struct {
		name, src string
		lim       Limits
		kind      error
		msg       string
	}{
		{"timeout", `while true do end`, Limits{Timeout: 30 * time.Millisecond}, ErrTimeout, "timeout: still running after 30ms"},
		{"depth", `local function f(n) if n == 0 then return 0 end return 1 + f(n - 1) end return f(60)`,
			Limits{CallDepth: 50}, ErrDepth, "call depth limit exceeded (50)"},
		{"registry", `return select("#", unpack({}, 1, 5000))`, Limits{Registry: 4096}, ErrRegistry, "limit 4096"},
		{"pattern", `return string.find(string.rep("a", 100), ".-.-b")`, Limits{PatternSteps: 5000}, ErrPattern, "more than 5000 steps"},
		{"memory", `return #string.rep("x", 2e6)`, Limits{Memory: 1 << 20}, ErrMemory, "limit 1048576"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFn(t, "function handle() "+c.src+" end", c.lim, Host{})
			ie := callErr(t, f, nil, c.kind)
			if !strings.Contains(ie.Message, c.msg) || !strings.HasPrefix(ie.Error(), "fn v1: fn.lua:1: ") {
				t.Errorf("got %q, want it to contain %q", ie.Error(), c.msg)
			}
			// The same source runs under the defaults: the bound was this function's.
			if c.kind == ErrTimeout {
				return
			}
			g := newFn(t, "function handle() "+c.src+" end", Limits{}, Host{})
			if _, err := g.Invoke(t.Context(), &Event{}); err != nil {
				t.Errorf("under the defaults: %v", err)
			}
		})
	}
}

func TestTimeoutStopsPromptly(t *testing.T) {
	const timeout = 50 * time.Millisecond
	f := newFn(t, `function handle() while true do end end`, Limits{Timeout: timeout}, Host{})
	res, err := f.Invoke(t.Context(), &Event{})
	if ie := (*InvokeError)(nil); err == nil || !errors.As(err, &ie) || ie.Kind != ErrTimeout {
		t.Fatalf("got %v", err)
	}
	// The issue asks for 2x; the check is loose because CI machines are shared. The
	// figure itself is reported by BenchmarkTimeoutStop.
	if res.Duration > 20*timeout {
		t.Fatalf("stopped after %v", res.Duration)
	}
	t.Logf("timeout %v: stopped after %v", timeout, res.Duration)
}

// TestMemoryNearLimit: live data near the limit is fine, past it is not, and garbage
// does not count however much of it there is.
func TestMemoryNearLimit(t *testing.T) {
	lim := Limits{Memory: 2 << 20, Timeout: 10 * time.Second}
	f := newFn(t, `function handle(e)
		local n = tonumber(e.topic)
		if e.source == "string" then return #string.rep("x", n) end
		if e.source == "table" then
			local t = {}
			for i = 1, n do t[i] = i end
			return #t
		end
		-- garbage: 40 MB of short-lived strings and tables, little kept
		local keep = 0
		for i = 1, n do local s = string.rep("y", 1000) .. i local t = {s, i} keep = keep + #t[1] end
		return keep
	end`, lim, Host{})
	for _, c := range []struct {
		source, n string
		ok        bool
	}{
		{"string", "1500000", true},
		{"string", "2200000", false},
		{"table", "50000", true},
		{"table", "150000", false},
		{"garbage", "40000", true},
	} {
		_, err := f.Invoke(t.Context(), &Event{Source: c.source, Topic: c.n})
		if c.ok && err != nil {
			t.Errorf("%s %s: %v", c.source, c.n, err)
		}
		if !c.ok && !errors.Is(err, ErrMemory) {
			t.Errorf("%s %s: got %v, want the memory bound", c.source, c.n, err)
		}
	}
}

// TestMemoryAcrossInvocations: globals kept between invocations count, so a function
// that grows them trips the bound in time, and runs again on a fresh VM.
func TestMemoryAcrossInvocations(t *testing.T) {
	f := newFn(t, `keep = {}
	function handle()
		keep[#keep + 1] = string.rep("x", 300000)
		return #keep
	end`, Limits{Memory: 1 << 20}, Host{})
	var tripped bool
	for i := 0; i < 10 && !tripped; i++ {
		_, err := f.Invoke(t.Context(), &Event{})
		tripped = errors.Is(err, ErrMemory)
	}
	if !tripped {
		t.Fatal("growing globals never tripped the memory bound")
	}
	if got := call(t, f, nil).value(); got != int64(1) {
		t.Fatalf("after the trip, #keep = %v: not a fresh VM", got)
	}
}

// TestRandomIsolation: math.randomseed in one function does not steer another's draws.
func TestRandomIsolation(t *testing.T) {
	a := newFn(t, `function handle() math.randomseed(7) return math.random(1, 1e9) end`, Limits{}, Host{})
	b := newFn(t, `function handle() return math.random(1, 1e9) end`, Limits{}, Host{})
	first := call(t, a, nil).value()
	if call(t, a, nil).value() != first {
		t.Fatal("randomseed does not seed")
	}
	seen := map[any]bool{}
	for range 5 {
		call(t, a, nil)
		seen[call(t, b, nil).value()] = true
	}
	if len(seen) < 4 {
		t.Fatalf("the other function drew %v after the first reseeded", seen)
	}
	for _, expr := range []string{"math.random(0)", "math.random(3, 1)", "math.random(1, 2, 3)"} {
		f := newFn(t, "function handle() return "+expr+" end", Limits{}, Host{})
		callErr(t, f, nil, ErrRuntime)
	}
}

// TestLibrariesPristineAcrossInvocations: what one invocation tries on the shared
// libraries, the next one does not see (the trap: getmetatable("").__index).
func TestLibrariesPristineAcrossInvocations(t *testing.T) {
	f := newFn(t, `function handle(e)
		if e.topic == "attack" then
			pcall(function() getmetatable("").__index.upper = function() return "evil" end end)
			pcall(rawset, string, "upper", nil)
			pcall(function() string.format = nil end)
			return "attacked"
		end
		return ("x"):upper() .. string.format("%d", 1) .. tostring(getmetatable("").__index == string)
	end`, Limits{}, Host{})
	call(t, f, &Event{Topic: "attack"})
	if got := call(t, f, nil).value(); got != "X1true" {
		t.Fatalf("after the attack: %v", got)
	}
}

// TestMemoryUpdatesAreFree: a function holding data near its limit that updates it in
// a loop is not slowed by memory walks: updates of existing keys are not charged.
func TestMemoryUpdatesAreFree(t *testing.T) {
	f := newFn(t, `
	list = {}
	for i = 1, 8000 do list[i] = {n = i, name = "item" .. i} end
	function handle()
		for round = 1, 25 do
			for i = 1, 8000 do
				local s = list[i]
				s.n = s.n + 1
				list.last = i
			end
		end
		return list[1].n
	end`, Limits{Memory: 4 << 20, Timeout: 10 * time.Second}, Host{})
	v := <-f.pool
	f.pool <- v
	if v.mem < 2<<20 {
		t.Fatalf("the state holds %d bytes: too little to test walks near the limit", v.mem)
	}
	before := v.walks
	if got := call(t, f, nil).value(); got != int64(26) {
		t.Fatalf("got %v", got)
	}
	// Charged at 88 bytes each, the 200000 updates would walk the heap every 256 KiB.
	if w := v.walks - before; w > 2 {
		t.Fatalf("%d memory walks for 200000 updates", w)
	}
}

// TestCancelStopsRunning: a caller that gives up (a deleted function) stops a loop that a
// long timeout would let run on, and the VM's slot is warm again for the next version.
func TestCancelStopsRunning(t *testing.T) {
	f := newFn(t, `function handle(e) if e.topic == "spin" then while true do end end return 1 end`,
		Limits{Timeout: time.Hour, Concurrency: 1}, Host{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := f.Invoke(ctx, &Event{Topic: "spin"})
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it spin
	cancel()
	select {
	case err := <-done:
		var ie *InvokeError
		if !errors.As(err, &ie) || !errors.Is(err, ErrCanceled) {
			t.Fatalf("canceled invocation: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a canceled invocation kept running")
	}
	if got := call(t, f, &Event{}).value(); fmt.Sprint(got) != "1" {
		t.Fatalf("next invocation: %v", got)
	}
}
