package lua

import "iter"

// Moongate's second change (MOONGATE.md): an instruction hook, and the read-only
// accessors an embedder that bounds a state needs to see inside it. Upstream has
// neither; the only way in was a context whose Done is selected before every
// instruction, and unsafe reads of unexported fields.

// A Hook watches a state run, called by the VM on the state's goroutine before an
// instruction runs. An error a method returns is raised as a Lua error at that
// instruction, with the instruction's position, as RaiseError raises it.
type Hook interface {
	// Enter is called when the VM starts running a Lua function, before its first
	// instruction; CallDepth then counts the function's frame. A tail call reuses its
	// caller's frame and is not reported, and neither is a call of a Go function.
	Enter(L *LState) error
	// Op is called before each instruction whose opcode is in the set given to
	// SetHook. FrameRegister and CurrentFrame read its operands.
	Op(L *LState, inst uint32) error
	// Count is called before an instruction once every count instructions.
	Count(L *LState) error
}

// hookState is a state's hook, as SetHook set it.
type hookState struct {
	on    bool
	h     Hook   // never nil: a removed hook is noHook, for a loop still running it
	ops   uint64 // bit 1<<opcode for each opcode Op is called for
	count int
	left  int // instructions to run before Count is called; never 0 when count is 0
}

type noHook struct{}

func (noHook) Enter(*LState) error      { return nil }
func (noHook) Op(*LState, uint32) error { return nil }
func (noHook) Count(*LState) error      { return nil }

// SetHook makes the state call h while it runs (see Hook): Op before each instruction
// whose opcode op has bit 1<<op set in ops, Count once every count instructions (never
// when count is 0). It may be called from a hook, for example to make Count run before
// every instruction from then on. SetHook(nil, 0, 0) removes the hook.
//
// The hook belongs to this state: threads it creates do not inherit it. Unlike the
// context of SetContext, which costs a channel select per instruction, a hook costs an
// instruction a counter, a bit test and a pointer comparison.
func (ls *LState) SetHook(h Hook, ops uint64, count int) {
	ls.hook = hookState{on: h != nil, h: h, ops: ops, count: count, left: count}
	if h == nil {
		ls.hook = hookState{h: noHook{}}
	}
	if ls.hook.count <= 0 {
		ls.hook.count, ls.hook.left = 0, -1
	}
	ls.setMainLoop()
}

// setMainLoop picks the main loop for the state's hook and context.
func (ls *LState) setMainLoop() {
	switch {
	case ls.hook.on:
		ls.mainLoop = mainLoopWithHook
	case ls.ctx != nil:
		ls.mainLoop = mainLoopWithContext
	default:
		ls.mainLoop = mainLoop
	}
}

// mainLoopWithHook is mainLoopWithContext with the hook's calls; it also honours a
// context, so that SetHook and SetContext can be combined.
func mainLoopWithHook(L *LState, baseframe *callFrame) {
	var inst uint32
	var cf, last *callFrame

	if L.stack.IsEmpty() {
		return
	}

	L.currentFrame = L.stack.Last()
	if L.currentFrame.Fn.IsG {
		callGFunction(L, false)
		return
	}

	for {
		cf = L.currentFrame
		inst = cf.Fn.Proto.Code[cf.Pc]
		cf.Pc++
		if L.hook.left--; L.hook.left == 0 {
			L.hook.left = L.hook.count
			if err := L.hook.h.Count(L); err != nil {
				L.RaiseError("%s", err.Error())
			}
		}
		// The frame changed: a call entered a function (its first instruction is
		// next) or a return went back to a caller (which is past its call).
		if cf != last {
			last = cf
			if cf.Pc == 1 {
				if err := L.hook.h.Enter(L); err != nil {
					L.RaiseError("%s", err.Error())
				}
			}
		}
		if L.hook.ops>>(inst>>26)&1 != 0 {
			if err := L.hook.h.Op(L, inst); err != nil {
				L.RaiseError("%s", err.Error())
			}
		}
		if L.ctx != nil {
			select {
			case <-L.ctx.Done():
				L.RaiseError(L.ctx.Err().Error())
				return
			default:
			}
		}
		if jumpTable[int(inst>>26)](L, inst, baseframe) == 1 {
			return
		}
	}
}

// CallDepth returns the number of frames on the call stack, Go functions' included.
func (ls *LState) CallDepth() int { return ls.stack.Sp() }

// FunctionAt returns the function of the frame at depth d of the call stack, from 0
// (the outermost) to CallDepth()-1 (the running one).
func (ls *LState) FunctionAt(d int) *LFunction { return ls.stack.At(d).Fn }

// CurrentFrame returns the running function and the index in its Proto.Code of its
// next instruction: in a hook's Op, the word after the instruction about to run. fn is
// nil when nothing runs.
func (ls *LState) CurrentFrame() (fn *LFunction, pc int) {
	if cf := ls.currentFrame; cf != nil {
		return cf.Fn, cf.Pc
	}
	return nil, 0
}

// FrameRegister returns register i of the running Lua function: R(i) in the operands of its
// instructions. Unlike Get it reads past the top of the stack, which an operand may.
func (ls *LState) FrameRegister(i int) LValue { return ls.reg.array[ls.currentFrame.LocalBase+i] }

// ValueStack returns the values on the state's value stack (the registry), from the
// bottom to the top, and the number of slots allocated for it. The slice is the
// state's own, to read only.
func (ls *LState) ValueStack() (values []LValue, capacity int) {
	return ls.reg.array[:ls.reg.top], cap(ls.reg.array)
}

// Parts returns the table's array part and its hash parts, for string keys and for
// other keys, as the table stores them: nil for a part the table never had. They are
// the table's own, to read only; they let an embedder size or encode a table without
// boxing each key, as ForEach and Next do.
func (tb *LTable) Parts() (array []LValue, strs StrPart, others map[LValue]LValue) {
	return tb.array, StrPart{tb.strs, tb.strdict}, tb.dict
}

// SmallStrKeys is the most string keys a table keeps in its small part, scanned in
// order, before they move to a Go map (see MOONGATE.md).
const SmallStrKeys = smallStrKeys

// StrPart is a table's hash part for string keys, to read only: a short slice while
// the table has at most SmallStrKeys of them, a Go map from then on.
type StrPart struct {
	small []strEntry
	large map[string]LValue
}

// Held reports whether the table has had string keys: the part is allocated.
func (p StrPart) Held() bool { return p.small != nil || p.large != nil }

// Large reports whether the string keys are in a Go map.
func (p StrPart) Large() bool { return p.large != nil }

// Len returns the number of string keys.
func (p StrPart) Len() int { return len(p.small) + len(p.large) }

// Cap returns how many string keys the small part holds without growing (0 once the
// keys are in a map).
func (p StrPart) Cap() int { return cap(p.small) }

// Get returns the value of key and whether the table has it.
func (p StrPart) Get(key string) (LValue, bool) {
	if p.large != nil {
		v, ok := p.large[key]
		return v, ok
	}
	for _, e := range p.small {
		if e.key == key {
			return e.value, true
		}
	}
	return LNil, false
}

// All yields the string keys and their values, in no particular order.
func (p StrPart) All() iter.Seq2[string, LValue] {
	return func(yield func(string, LValue) bool) {
		for _, e := range p.small {
			if !yield(e.key, e.value) {
				return
			}
		}
		for k, v := range p.large {
			if !yield(k, v) {
				return
			}
		}
	}
}

// HashPeak returns the most entries the hash parts have held at once. Go maps do not
// shrink, so this tells what they hold after deletes.
func (tb *LTable) HashPeak() int { return tb.hashPeak }

// NextIndex describes the key order Next builds on the table's first walk (see
// MOONGATE.md): whether it is built, how many keys it maps and the capacity of its
// key list.
func (tb *LTable) NextIndex() (built bool, keys, capacity int) {
	if tb.walk == nil {
		return false, 0, 0
	}
	return true, len(tb.walk.k2i), cap(tb.walk.keys)
}
