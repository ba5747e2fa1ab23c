package lua

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// testHook records what the VM reports and stops it when told to.
type testHook struct {
	enters []int // CallDepth at each Enter
	ops    []uint32
	counts int
	onOp   func(L *LState, inst uint32) error
	// stopAfter makes Count fail from its stopAfter-th call on (0: never).
	stopAfter int
	onCount   func(L *LState)
}

func (h *testHook) Enter(L *LState) error {
	h.enters = append(h.enters, L.CallDepth())
	return nil
}

func (h *testHook) Op(L *LState, inst uint32) error {
	h.ops = append(h.ops, inst)
	if h.onOp != nil {
		return h.onOp(L, inst)
	}
	return nil
}

func (h *testHook) Count(L *LState) error {
	h.counts++
	if h.onCount != nil {
		h.onCount(L)
	}
	if h.stopAfter > 0 && h.counts >= h.stopAfter {
		return errors.New("stopped by the hook")
	}
	return nil
}

func TestHookCountStops(t *testing.T) {
	L := NewState()
	defer L.Close()
	h := &testHook{stopAfter: 5}
	L.SetHook(h, 0, 100)
	err := L.DoString(`local n = 0
	while true do n = n + 1 end`)
	if err == nil || !strings.Contains(err.Error(), "<string>:2: stopped by the hook") {
		t.Fatalf("got %v, want the hook's error at line 2", err)
	}
	if h.counts != 5 {
		t.Fatalf("Count called %d times, want 5", h.counts)
	}
	// A loop of n instructions calls Count n/count times.
	h = &testHook{}
	L.SetHook(h, 0, 10)
	if err := L.DoString(`for i = 1, 1000 do end`); err != nil {
		t.Fatal(err)
	}
	if h.counts < 100 || h.counts > 102 {
		t.Fatalf("Count called %d times for about 1000 instructions, every 10", h.counts)
	}
}

func TestHookOpSeesOperands(t *testing.T) {
	L := NewState()
	defer L.Close()
	var concat []string
	h := &testHook{onOp: func(L *LState, inst uint32) error {
		if op := int(inst >> 26); op != OP_CONCAT {
			t.Errorf("Op called for opcode %d, not in the set", op)
		}
		b, c := int(inst&0x1ff), int(inst>>9)&0x1ff
		var s []string
		for i := b; i <= c; i++ {
			s = append(s, L.FrameRegister(i).String())
		}
		concat = append(concat, strings.Join(s, "+"))
		if fn, pc := L.CurrentFrame(); fn == nil || fn.Proto.Code[pc-1] != inst {
			t.Errorf("CurrentFrame's pc is not past the instruction")
		}
		return nil
	}}
	L.SetHook(h, 1<<OP_CONCAT, 0)
	if err := L.DoString(`local a, b, c = "x", 1, "z"
	local t = {}
	t.k = a .. b .. c`); err != nil {
		t.Fatal(err)
	}
	if len(concat) != 1 || concat[0] != "x+1+z" {
		t.Fatalf("Op saw %q, want one concatenation of x, 1, z", concat)
	}
	if h.counts != 0 {
		t.Fatal("Count called with count 0")
	}
}

func TestHookEnter(t *testing.T) {
	L := NewState()
	defer L.Close()
	h := &testHook{}
	L.SetHook(h, 0, 0)
	if err := L.DoString(`
	local function f(n) if n > 0 then f(n - 1) end end
	f(3)
	local function g(n) if n > 0 then return g(n - 1) end end
	g(5)
	local t = setmetatable({}, {__index = function(t, k) return k end})
	local _ = t.x
	pcall(f, 0)`); err != nil {
		t.Fatal(err)
	}
	// The chunk at depth d, f at d+1..d+4, g once (its tail calls reuse the frame),
	// the __index function, and f under pcall, a Go function's frame above the chunk's.
	d := h.enters[0]
	want := []int{d, d + 1, d + 2, d + 3, d + 4, d + 1, d + 1, d + 2}
	if len(h.enters) != len(want) {
		t.Fatalf("Enter depths %v, want %v", h.enters, want)
	}
	for i := range want {
		if h.enters[i] != want[i] {
			t.Fatalf("Enter depths %v, want %v", h.enters, want)
		}
	}
}

// TestHookFromHook: a hook may change the hook it runs in, and remove it.
func TestHookFromHook(t *testing.T) {
	L := NewState()
	defer L.Close()
	h := &testHook{}
	h.onCount = func(L *LState) {
		if h.counts == 1 {
			L.SetHook(h, 0, 1) // from now on, before every instruction
		}
		if h.counts == 50 {
			L.SetHook(nil, 0, 0)
		}
	}
	L.SetHook(h, 0, 1000)
	if err := L.DoString(`for i = 1, 10000 do end`); err != nil {
		t.Fatal(err)
	}
	if h.counts != 50 {
		t.Fatalf("Count called %d times, want 50", h.counts)
	}
}

// TestHookWithContext: SetContext and RemoveContext keep the hook, and the hook's loop
// honours the context.
func TestHookWithContext(t *testing.T) {
	L := NewState()
	defer L.Close()
	h := &testHook{}
	L.SetHook(h, 0, 10)
	ctx, cancel := context.WithCancel(context.Background())
	L.SetContext(ctx)
	cancel()
	if err := L.DoString(`while true do end`); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("got %v, want the context's error", err)
	}
	L.RemoveContext()
	h.stopAfter = h.counts + 3
	if err := L.DoString(`while true do end`); err == nil || !strings.Contains(err.Error(), "stopped by the hook") {
		t.Fatalf("after RemoveContext: got %v, want the hook's error", err)
	}
}

func TestHookAccessors(t *testing.T) {
	L := NewState()
	defer L.Close()
	var depth int
	var fns []*LFunction
	var stack []LValue
	L.SetGlobal("probe", L.NewFunction(func(L *LState) int {
		depth = L.CallDepth()
		fns = fns[:0]
		for d := 0; d < depth; d++ {
			fns = append(fns, L.FunctionAt(d))
		}
		values, capacity := L.ValueStack()
		if capacity < len(values) {
			t.Errorf("ValueStack: capacity %d below %d values", capacity, len(values))
		}
		stack = append(stack[:0], values...)
		if fn, _ := L.CurrentFrame(); fn != fns[depth-1] || !fn.IsG {
			t.Errorf("CurrentFrame is not the running Go function")
		}
		return 0
	}))
	if err := L.DoString(`local function inner(a, b) probe() end
	inner("marker", 42)`); err != nil {
		t.Fatal(err)
	}
	if depth != 3 || fns[0].IsG || fns[1].IsG || !fns[2].IsG {
		t.Fatalf("CallDepth %d, functions %v: want the chunk, inner, probe", depth, fns)
	}
	var found bool
	for i := 0; i+1 < len(stack); i++ {
		found = found || stack[i] == LString("marker") && stack[i+1] == LNumber(42)
	}
	if !found {
		t.Fatalf("ValueStack %v lacks inner's arguments", stack)
	}

	tb := L.CreateTable(0, 0)
	if a, s, o := tb.Parts(); a != nil || s.Held() || o != nil {
		t.Fatal("a table made without parts has parts")
	}
	tb.RawSetInt(1, LTrue)
	tb.RawSetString("a", LNumber(1))
	tb.RawSetString("b", LNumber(2))
	tb.RawSet(LTrue, LNumber(3))
	a, s, o := tb.Parts()
	if v, _ := s.Get("a"); len(a) != 1 || a[0] != LTrue || v != LNumber(1) || s.Len() != 2 || s.Large() || o[LTrue] != LNumber(3) {
		t.Fatalf("Parts: %v %v %v", a, s, o)
	}
	tb.RawSetString("a", LNil)
	if tb.HashPeak() != 3 {
		t.Fatalf("HashPeak %d, want 3", tb.HashPeak())
	}
	if built, _, _ := tb.NextIndex(); built {
		t.Fatal("NextIndex built before the first walk")
	}
	tb.Next(LNil)
	if built, keys, capacity := tb.NextIndex(); !built || keys != 2 || capacity < 2 {
		t.Fatalf("NextIndex after a walk: %v %d %d", built, keys, capacity)
	}
}
