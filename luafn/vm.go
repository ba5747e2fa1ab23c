package luafn

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// vm is one warm Lua state with its sandbox, bounds and per-invocation state. Only one
// goroutine runs it at a time (the pool hands it out), except for the watchdog timer,
// which touches only the atomic fields.
//
// vm is also the state's lua.Hook, set once per VM (see hook.go of third_party/gopher-lua):
// the bounds that must see the VM run are there. Op charges the instructions that
// allocate, Enter bounds the call depth, Count reads the clock and the caller's
// cancellation every hookEvery instructions.
type vm struct {
	L      *lua.LState
	prog   *Program
	host   *Host
	logs   *logBudget // the function's, shared by its VMs
	limits Limits

	// tripped is the bound that tripped. Once the VM's goroutine sees it, every later
	// instruction fails (see stop), so pcall cannot swallow the trip.
	tripped atomic.Pointer[tripError]

	// Timeout watchdog: deadline is the running invocation's deadline in nanoseconds
	// since epoch (0 when idle). The timer is re-armed lazily, so a busy VM costs one
	// timer firing per timeout period, not one timer per invocation.
	epoch    time.Time
	deadline atomic.Int64
	armed    atomic.Bool
	timer    *time.Timer
	// canceled is the running invocation's ctx.Done(), read with the clock: a caller that
	// gives up (a deleted function) stops a loop that its timeout would let run on.
	canceled <-chan struct{}

	// Memory accounting (see memory.go).
	mem      int64
	nextWalk int64
	pending  int64 // held by builtins building results (see building)
	walks    int
	skip     map[*lua.LTable]struct{} // the sandbox's own tables: walks skip them

	// protected holds the read-only tables Lua can reach (library proxies); rawset,
	// table.insert and friends refuse them.
	protected  map[*lua.LTable]struct{}
	refuse     *lua.LFunction // the __newindex of every read-only proxy
	handleKey  lua.LString
	pcg        *rand.PCG
	rng        *rand.Rand
	scratch    []lua.LValue  // reused by the JSON decoder
	jsonBuf    []byte        // reused by the JSON encoder
	jsonFields []field       // reused by the JSON encoder
	jsonPath   []*lua.LTable // reused by the JSON encoder
	// The last event source and topic, boxed: events keep coming from the same ones.
	source, topic lua.LValue
	keys          map[string]lua.LValue // object keys the JSON decoder has boxed (see key)

	patternSteps int64 // left in the running invocation

	inv     *invocation // the running invocation (&current); nil while loading the chunk
	current invocation
}

// tripError is the error a tripped bound raises inside the VM.
type tripError struct {
	kind error
	msg  string
}

func (e *tripError) Error() string { return e.msg }

// hookEvery is how many instructions run between two reads of the clock. The VM
// reads it itself: a watchdog timer needs its goroutine scheduled, which a loaded
// machine can delay by tens of milliseconds.
const hookEvery = 1024

// allocatingOps are the opcodes chargeInstruction charges, as a bit set for SetHook.
const allocatingOps uint64 = 1<<lua.OP_CONCAT | 1<<lua.OP_SETTABLE | 1<<lua.OP_SETTABLEKS | 1<<lua.OP_SETGLOBAL |
	1<<lua.OP_NEWTABLE | 1<<lua.OP_SETLIST | 1<<lua.OP_CLOSURE

// Count is the lua.Hook's call every hookEvery instructions, and before every
// instruction once a bound tripped.
func (v *vm) Count(*lua.LState) error {
	if v.tripped.Load() == nil {
		if d := v.deadline.Load(); d != 0 && v.now() >= d {
			v.trip(ErrTimeout, fmt.Sprintf("timeout: still running after %v", v.limits.Timeout))
		}
		select {
		case <-v.canceled:
			v.trip(ErrCanceled, "invocation canceled: its caller stopped waiting")
		default:
		}
	}
	if t := v.tripped.Load(); t != nil {
		v.stop() // the trip may be the watchdog's, which cannot stop the VM itself
		return t
	}
	return nil
}

// Enter is the lua.Hook's call as a Lua function starts: it bounds the call depth.
func (v *vm) Enter(L *lua.LState) error {
	if L.CallDepth() > v.limits.CallDepth {
		v.trip(ErrDepth, fmt.Sprintf("call depth limit exceeded (%d)", v.limits.CallDepth))
	}
	return v.err()
}

// Op is the lua.Hook's call before an instruction in allocatingOps: it charges it.
func (v *vm) Op(_ *lua.LState, inst uint32) error {
	v.chargeInstruction(inst)
	return v.err()
}

// err returns the bound that tripped, if any.
func (v *vm) err() error {
	if t := v.tripped.Load(); t != nil {
		return t
	}
	return nil
}

// trip stops the VM for good: the first bound to trip wins. It runs on the VM's
// goroutine; the watchdog records its trip with record.
func (v *vm) trip(kind error, msg string) {
	v.record(kind, msg)
	v.stop()
}

// record records a trip without stopping the VM. Safe from any goroutine: the VM's
// hook sees it within hookEvery instructions, and builtins that loop in Go check it.
func (v *vm) record(kind error, msg string) {
	v.tripped.CompareAndSwap(nil, &tripError{kind: kind, msg: msg})
}

// stop makes the hook's Count run before every instruction from now on, so every
// instruction raises the trip: a pcall that catches it cannot go on.
func (v *vm) stop() { v.L.SetHook(v, 0, 1) }

// raiseIfTripped is for builtins: it raises the trip as a Lua error so the builtin
// stops at once instead of finishing its work.
func (v *vm) raiseIfTripped() {
	if t := v.tripped.Load(); t != nil {
		v.stop() // the trip may be the watchdog's
		v.L.RaiseError("%s", t.msg)
	}
}

// mustCharge charges n bytes and raises if the memory bound trips.
func (v *vm) mustCharge(n int64) {
	if !v.charge(n) {
		v.raiseIfTripped()
	}
}

func (v *vm) now() int64 { return int64(time.Since(v.epoch)) }

// arm starts the watchdog for one run starting at start.
func (v *vm) arm(start time.Time) {
	v.deadline.Store(int64(start.Sub(v.epoch)) + int64(v.limits.Timeout))
	if v.armed.CompareAndSwap(false, true) {
		v.timer.Reset(v.limits.Timeout)
	}
}

func (v *vm) disarm() { v.deadline.Store(0) }

// watch runs on the timer's goroutine.
func (v *vm) watch() {
	d := v.deadline.Load()
	now := v.now()
	switch {
	case d != 0 && now >= d:
		v.record(ErrTimeout, fmt.Sprintf("timeout: still running after %v", v.limits.Timeout))
		v.armed.Store(false)
	case d != 0:
		v.timer.Reset(time.Duration(d - now))
	default:
		v.armed.Store(false)
		// An invocation may have started between the load and the store above and
		// seen the timer armed: re-check, so that it is watched.
		if d = v.deadline.Load(); d != 0 && v.armed.CompareAndSwap(false, true) {
			v.timer.Reset(time.Duration(max(0, d-v.now())))
		}
	}
}

// newVM creates a state, installs the sandbox and runs the chunk's top level under the
// function's bounds.
func newVM(p *Program, h *Host, logs *logBudget) (*vm, error) {
	lim := p.spec.Limits
	v := &vm{
		prog:      p,
		host:      h,
		logs:      logs,
		limits:    lim,
		epoch:     time.Now(),
		protected: make(map[*lua.LTable]struct{}),
		handleKey: "handle",
		pcg:       rand.NewPCG(rand.Uint64(), rand.Uint64()),
		skip:      make(map[*lua.LTable]struct{}),
	}
	v.rng = rand.New(v.pcg)
	v.patternSteps = lim.PatternSteps // for the chunk's top level
	v.nextWalk = lim.Memory
	v.L = lua.NewState(lua.Options{
		SkipOpenLibs: true,
		// gopher-lua's own stack limit sits above ours so that the hook, which names
		// the bound, trips first; the margin covers frames of Go builtins.
		CallStackSize:       lim.CallDepth + 64,
		RegistrySize:        256,
		RegistryMaxSize:     lim.Registry,
		RegistryGrowStep:    1024,
		MinimizeStackMemory: true,
	})
	v.timer = time.AfterFunc(time.Hour, v.watch)
	v.timer.Stop()
	if err := v.openSandbox(); err != nil {
		v.close()
		return nil, err
	}
	if !p.unbounded {
		v.L.SetHook(v, allocatingOps, hookEvery)
	}
	fn := v.L.NewFunctionFromProto(p.proto)
	v.L.Push(fn)
	if err := v.run(0, 0, time.Now()); err != nil {
		v.close()
		var ie *InvokeError
		if errors.As(err, &ie) {
			return nil, &CompileError{Function: p.spec.Name, File: p.spec.Filename, Line: ie.Line, Message: ie.Message}
		}
		return nil, err
	}
	if _, ok := v.L.G.Global.RawGetString("handle").(*lua.LFunction); !ok {
		v.close()
		return nil, &CompileError{Function: p.spec.Name, File: p.spec.Filename, Message: ErrNoHandle.Error()}
	}
	// What the sandbox and the chunk hold counts against the limit from now on.
	v.mem = v.measure(lim.Memory)
	return v, nil
}

func (v *vm) close() {
	v.timer.Stop()
	v.L.Close()
}

// usable reports whether the VM can run again: no bound tripped.
func (v *vm) usable() bool { return v.tripped.Load() == nil }

// run calls the function on the stack with nargs arguments under the bounds and leaves
// nret results on the stack.
func (v *vm) run(nargs, nret int, start time.Time) error {
	if v.prog.unbounded {
		return v.L.PCall(nargs, nret, nil)
	}
	v.arm(start)
	err := v.L.PCall(nargs, nret, nil)
	v.disarm()
	if err == nil {
		// The watchdog may have fired just as the call returned: the result stands,
		// but the VM must not be used again.
		return nil
	}
	return v.invokeError(err)
}

// invokeError turns a PCall error into an *InvokeError with kind, position and a
// short traceback. It never runs Lua code: an error object's __tostring is not called.
func (v *vm) invokeError(err error) *InvokeError {
	spec := &v.prog.spec
	ie := &InvokeError{Function: spec.Name, Version: spec.Version, Kind: ErrRuntime}
	var ae *lua.ApiError
	if !errors.As(err, &ae) {
		ie.Message = err.Error()
		return ie
	}
	switch o := ae.Object.(type) {
	case lua.LString:
		ie.Message = string(o)
	case lua.LNumber:
		ie.Message = o.String()
	default:
		ie.Message = fmt.Sprintf("(error object is a %s value)", ae.Object.Type())
	}
	if ae.Type == lua.ApiErrorPanic {
		ie.Message = "internal error: " + ie.Message
	}
	ie.Traceback, ie.File, ie.Line = shortTraceback(ae.StackTrace, spec.Filename)
	ie.Message = trimPosition(ie.Message, spec.Filename)
	if ie.Line > 0 {
		ie.Message = sandboxHint(ie.Message, sourceLine(spec.Source, ie.Line))
	}
	if t := v.tripped.Load(); t != nil {
		ie.Kind, ie.Message = t.kind, t.msg
		return ie
	}
	// Bounds gopher-lua enforces itself, past ours: they leave the VM unusable too.
	switch {
	case strings.HasSuffix(ie.Message, "stack overflow"):
		v.trip(ErrDepth, ie.Message)
		ie.Kind = ErrDepth
	case strings.HasSuffix(ie.Message, "registry overflow"):
		v.trip(ErrRegistry, ie.Message)
		ie.Kind = ErrRegistry
	case ae.Type == lua.ApiErrorPanic:
		v.trip(ErrRuntime, ie.Message)
	}
	return ie
}

// trimPosition removes a leading "file:line: " that names the function's own file: the
// InvokeError carries the position separately.
func trimPosition(msg, file string) string {
	rest, ok := strings.CutPrefix(msg, file+":")
	if !ok {
		return msg
	}
	i := strings.Index(rest, ": ")
	if i <= 0 || strings.Trim(rest[:i], "0123456789") != "" {
		return msg
	}
	return rest[i+2:]
}

// shortTraceback keeps the Lua frames of gopher-lua's traceback, innermost first, and
// returns the position of the innermost frame in file.
func shortTraceback(tb, file string) (short, errFile string, line int) {
	const maxFrames = 8
	var out []string
	for _, l := range strings.Split(tb, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l == "stack traceback:" || strings.HasPrefix(l, "[G]:") || l == "..." {
			continue
		}
		if len(out) < maxFrames {
			out = append(out, l)
		}
		if line == 0 {
			if rest, ok := strings.CutPrefix(l, file+":"); ok {
				if i := strings.IndexByte(rest, ':'); i > 0 {
					if n, err := parseLine(rest[:i]); err == nil {
						errFile, line = file, n
					}
				}
			}
		}
	}
	return strings.Join(out, "\n"), errFile, line
}

// sourceLine returns the 1-based line n of src, or "".
func sourceLine(src string, n int) string {
	for i := 1; i < n; i++ {
		j := strings.IndexByte(src, '\n')
		if j < 0 {
			return ""
		}
		src = src[j+1:]
	}
	line, _, _ := strings.Cut(src, "\n")
	return line
}

func parseLine(s string) (int, error) {
	n := 0
	if s == "" || len(s) > 9 {
		return 0, errors.New("not a line")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("not a line")
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}
