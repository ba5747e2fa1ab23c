package luafn

import (
	"fmt"
	"strings"
	"unsafe"

	lua "github.com/yuin/gopher-lua"
)

// The memory bound, without an allocator hook.
//
// Every operation that can make the VM hold more memory is charged before it runs: the
// instruction hook (third_party/gopher-lua's SetHook) charges the VM instructions that allocate (concatenation, table construction and
// growth, closures), and the replacement builtins charge what they are about to build
// (string.rep, table.concat, string.format, gsub, json...). Charges only add up, so
// v.mem is an upper bound of what the VM holds. When it passes the limit, the VM's live
// data is measured by walking everything reachable from it; the walk resets v.mem to
// the real figure, and the operation is refused if the real figure plus the charge is
// past the limit. So no single operation can outrun the bound, garbage does not count,
// and walks happen at most once per limit/16 charged bytes, which keeps them cheap.

// Estimated sizes, in bytes, of gopher-lua's values on a 64-bit Go heap.
const (
	sizeSlot       = 16  // one LValue (interface) in an array or register
	sizeString     = 16  // a boxed string header
	sizeNumber     = 8   // a boxed float64
	sizeTable      = 112 // an empty LTable
	sizeStrEntry   = 40  // a strdict or dict entry, with map overhead
	sizeSmallEntry = 32  // a string key's entry in a small table's slice (lua.SmallStrKeys)
	sizeKeyEntry   = 48  // the iteration index per hash key (keys + k2i), built by the first next
	sizeFunction   = 96  // an LFunction
	sizeUpvalue    = 64  // an Upvalue
	sizeOther      = 64  // userdata, threads, channels (not creatable by sandboxed code)
	newHashCap     = 32  // gopher-lua's capacity of a table's first string-key map
	walkAllowance  = 16  // walk again only after limit/walkAllowance more bytes are charged
	dedupeString   = 64  // strings at least this long are counted once, however often referenced
)

// charge records that the VM is about to hold n more bytes, and trips the memory bound
// if it would then hold more than its limit. It reports whether the VM may go on.
func (v *vm) charge(n int64) bool {
	v.mem += n
	if v.mem <= v.nextWalk {
		return true
	}
	return v.checkMemory(n)
}

// checkMemory measures what the VM holds and decides whether n more bytes fit.
func (v *vm) checkMemory(n int64) bool {
	if v.tripped.Load() != nil {
		return false
	}
	if n > v.limits.Memory {
		v.trip(ErrMemory, fmt.Sprintf("memory limit exceeded: %d bytes requested at once, limit %d", n, v.limits.Memory))
		return false
	}
	live := v.measure(v.limits.Memory - n)
	live += v.pending // results being built by a builtin
	if v.inv != nil {
		live += v.inv.held // effects and logs, held outside the VM
	}
	if live+n > v.limits.Memory {
		v.trip(ErrMemory, fmt.Sprintf("memory limit exceeded: %d bytes held, %d more requested, limit %d", live, n, v.limits.Memory))
		return false
	}
	v.mem = live + n
	v.nextWalk = max(v.limits.Memory, v.mem+v.limits.Memory/walkAllowance)
	v.walks++
	return true
}

// building accounts for the bytes a builtin holds outside the VM while it builds a
// result (a gsub buffer, a JSON text, a decoded table not yet on the stack): the memory
// walk cannot see them, so without this a walk would forget them and a long build
// could grow past the limit. release must run when the builtin ends, even by an error.
type building struct {
	v *vm
	n int64
}

func (v *vm) build() *building { return &building{v: v} }

// add charges n more bytes, reporting whether the memory bound allows them.
func (b *building) add(n int64) bool {
	b.n += n
	b.v.pending += n
	return b.v.charge(n)
}

// mustAdd is add for builtins: it raises when the bound trips.
func (b *building) mustAdd(n int64) {
	if !b.add(n) {
		b.v.raiseIfTripped()
	}
}

func (b *building) release() {
	b.v.pending -= b.n
	b.n = 0
}

// textBuilder builds a string result, charging its bytes as they are written.
type textBuilder struct {
	strings.Builder
	pend building
}

func (v *vm) buildText() *textBuilder { return &textBuilder{pend: building{v: v}} }

// add appends s; it raises when the bound trips.
func (b *textBuilder) add(s string) {
	b.pend.mustAdd(int64(len(s)))
	b.WriteString(s)
}

func (b *textBuilder) release() { b.pend.release() }

// chargeInstruction charges the instruction the VM is about to run, if it allocates.
func (v *vm) chargeInstruction(inst uint32) {
	L := v.L
	switch int(inst >> 26) {
	case lua.OP_CONCAT:
		b, c := int(inst&0x1ff), int(inst>>9)&0x1ff
		n := int64(sizeString)
		for i := b; i <= c; i++ {
			switch x := L.FrameRegister(i).(type) {
			case lua.LString:
				n += int64(len(x))
			case lua.LNumber:
				n += 24
			}
		}
		v.charge(n)
	case lua.OP_SETTABLE, lua.OP_SETTABLEKS:
		if t, ok := L.FrameRegister(int(inst>>18) & 0xff).(*lua.LTable); ok {
			v.charge(growth(t, v.rk(int(inst&0x1ff))))
		}
	case lua.OP_SETGLOBAL:
		fn, _ := L.CurrentFrame()
		v.charge(growth(fn.Env, fn.Proto.Constants[inst&0x3ffff]))
	case lua.OP_NEWTABLE:
		b, c := int64(inst&0x1ff), int64(inst>>9)&0x1ff
		v.charge(sizeTable + b*sizeSlot + c*sizeStrEntry)
	case lua.OP_SETLIST:
		a := int(inst>>18) & 0xff
		n, c := int64(inst&0x1ff), int64(inst>>9)&0x1ff
		if n == 0 {
			n = int64(L.GetTop() - a - 1) // the values up to the top
		}
		if c == 0 {
			fn, pc := L.CurrentFrame() // the batch number is the next word
			c = int64(fn.Proto.Code[pc])
		}
		if t, ok := L.FrameRegister(a).(*lua.LTable); ok {
			array, _, _ := t.Parts()
			end := (c-1)*int64(lua.FieldsPerFlush) + n
			v.charge(max(0, end-int64(cap(array))) * sizeSlot)
		}
	case lua.OP_CLOSURE:
		fn, _ := L.CurrentFrame()
		p := fn.Proto.FunctionPrototypes[inst&0x3ffff]
		v.charge(sizeFunction + int64(p.NumUpvalues)*(8+sizeUpvalue))
	}
}

// rk reads an RK operand: a constant when its high bit is set, else a register.
func (v *vm) rk(x int) lua.LValue {
	if x&0x100 != 0 {
		fn, _ := v.L.CurrentFrame()
		return fn.Proto.Constants[x&0xff]
	}
	return v.L.FrameRegister(x)
}

// growth estimates how many bytes t grows by when key is set in it.
func growth(t *lua.LTable, key lua.LValue) int64 {
	array, strs, others := t.Parts()
	if k, ok := key.(lua.LNumber); ok {
		i := int64(k)
		if lua.LNumber(i) == k && i >= 1 && i < int64(lua.MaxArrayIndex) {
			if i <= int64(cap(array)) {
				return 0
			}
			// gopher-lua fills the gap up to i with nils, and append at least doubles.
			return (max(i, 2*int64(cap(array))) - int64(cap(array))) * sizeSlot
		}
	}
	// Updating a key that exists costs nothing: charging it would make a function that
	// keeps much data and updates it in a loop walk its heap over and over.
	if s, ok := key.(lua.LString); ok {
		if _, exists := strs.Get(string(s)); exists {
			return 0
		}
		switch {
		case strs.Large():
			return sizeStrEntry
		case strs.Len() == lua.SmallStrKeys: // the keys move to a map
			return newHashCap*sizeStrEntry + sizeStrEntry
		case strs.Len() < strs.Cap():
			return 0 // charged when the table was made
		default: // the small part grows: 4 entries first, then doubling
			return max(4, int64(strs.Cap())) * sizeSmallEntry
		}
	}
	if _, exists := others[key]; exists {
		return 0
	}
	return sizeStrEntry
}

// walker measures the data reachable from a VM. Its maps are made for each walk, so a
// VM does not keep the capacity its largest walk needed.
type walker struct {
	skip    map[*lua.LTable]struct{} // the sandbox's own tables, not the function's memory
	tables  map[*lua.LTable]struct{}
	funcs   map[*lua.LFunction]struct{}
	strings map[*byte]struct{}
	stack   []lua.LValue
}

// measure returns the bytes held by the VM: its value stack, its globals and everything
// reachable from them. It stops early once the total passes stop.
func (v *vm) measure(stop int64) int64 {
	w := &walker{
		skip:    v.skip,
		tables:  make(map[*lua.LTable]struct{}),
		funcs:   make(map[*lua.LFunction]struct{}),
		strings: make(map[*byte]struct{}),
	}
	values, capacity := v.L.ValueStack()
	total := int64(capacity) * sizeSlot
	w.stack = append(w.stack, values...)
	w.stack = append(w.stack, v.L.G.Global)
	for d := range v.L.CallDepth() {
		w.stack = append(w.stack, v.L.FunctionAt(d))
	}
	for len(w.stack) > 0 && total <= stop {
		x := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		total += w.size(x)
	}
	return total
}

// size returns the size of x itself and pushes what x references.
func (w *walker) size(x lua.LValue) int64 {
	switch x := x.(type) {
	case lua.LString:
		if len(x) >= dedupeString {
			p := unsafe.StringData(string(x))
			if _, ok := w.strings[p]; ok {
				return sizeString
			}
			w.strings[p] = struct{}{}
		}
		return sizeString + int64(len(x))
	case lua.LNumber:
		return sizeNumber
	case *lua.LTable:
		if x == nil {
			return 0
		}
		if _, ok := w.skip[x]; ok {
			return 0
		}
		if _, ok := w.tables[x]; ok {
			return 0
		}
		w.tables[x] = struct{}{}
		array, strs, others := x.Parts()
		_, indexed, keysCap := x.NextIndex()
		n := int64(sizeTable) + int64(cap(array))*sizeSlot + int64(keysCap)*sizeSlot
		// Go maps do not shrink: the hash part holds what it held at its peak. The
		// iteration index exists once the table has been walked, and only grows.
		n += int64(x.HashPeak())*sizeStrEntry + int64(indexed)*sizeKeyEntry
		if strs.Large() {
			n += newHashCap * sizeStrEntry
		}
		if x.Metatable != lua.LNil {
			w.stack = append(w.stack, x.Metatable)
		}
		for _, e := range array {
			if e != lua.LNil {
				w.stack = append(w.stack, e)
			}
		}
		for k, e := range strs.All() {
			n += sizeString + int64(len(k))
			w.stack = append(w.stack, e)
		}
		for k, e := range others {
			w.stack = append(w.stack, k, e)
		}
		return n
	case *lua.LFunction:
		if _, ok := w.funcs[x]; ok {
			return 0
		}
		w.funcs[x] = struct{}{}
		n := int64(sizeFunction) + int64(len(x.Upvalues))*(8+sizeUpvalue)
		if x.Env != nil {
			w.stack = append(w.stack, x.Env)
		}
		for _, uv := range x.Upvalues {
			if uv != nil {
				w.stack = append(w.stack, uv.Value())
			}
		}
		return n
	case *lua.LNilType, lua.LBool:
		return 0
	}
	return sizeOther
}
