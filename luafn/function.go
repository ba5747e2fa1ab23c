package luafn

import (
	"context"
	"fmt"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Function is one deployed version of a function: its program and a pool of warm VMs,
// all created by New so that no invocation pays for a cold start.
//
// To redeploy, the caller swaps its pointer to the new Function and closes the old one:
// Close waits for the invocations in flight, and an Invoke that had not yet started gets
// ErrClosed (its event did not run) and should be retried on the current version.
type Function struct {
	prog *Program
	host Host
	// pool holds the idle VMs; a nil entry is a slot whose VM must be (re)created.
	pool      chan *vm
	logs      *logBudget
	done      chan struct{}
	closeOnce sync.Once
}

// New builds a version ready to run: Limits.Concurrency warm VMs, each with the sandbox
// installed and the chunk's top level run. A top level that fails, or that does not
// define handle, is a *CompileError.
func New(p *Program, host Host) (*Function, error) {
	n := p.spec.Limits.Concurrency
	f := &Function{prog: p, host: host, pool: make(chan *vm, n), done: make(chan struct{})}
	f.logs = &logBudget{onLog: host.OnLog, function: p.spec.Name, version: p.spec.Version, limits: p.spec.Limits, now: f.host.now,
		after: afterFunc}
	for range n {
		v, err := newVM(p, &f.host, f.logs)
		if err != nil {
			close(f.pool)
			for v := range f.pool {
				v.close()
			}
			return nil, err
		}
		f.pool <- v
	}
	return f, nil
}

// Program returns the compiled program the function runs.
func (f *Function) Program() *Program { return f.prog }

// Invoke runs handle(event) on a free warm VM, waiting for one if all are busy; ctx
// bounds that wait, and cancelling it also stops a running invocation (within about a
// thousand Lua instructions) with ErrCanceled. Once running, the invocation is bounded by
// the function's Limits.
// Invoke is safe for concurrent use.
//
// On success the Result carries the returned value and the effects to commit. On failure
// the error is an *InvokeError (or ErrClosed, or ErrCanceled), and the Result, when not
// nil, carries only the logs and duration: a failed invocation has no effects.
func (f *Function) Invoke(ctx context.Context, ev *Event) (res *Result, err error) {
	var v *vm
	select {
	case v = <-f.pool: // a warm VM is free: the common case, without the cost of a 3-way select
	default:
		select {
		case v = <-f.pool:
		case <-f.done:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrCanceled, ctx.Err())
		}
	}
	select {
	case <-f.done: // Close began while we waited
		f.pool <- v
		return nil, ErrClosed
	default:
	}
	if v == nil {
		if v, err = newVM(f.prog, &f.host, f.logs); err != nil {
			f.pool <- nil
			return nil, fmt.Errorf("%s v%d: recreate VM: %w", f.prog.spec.Name, f.prog.spec.Version, err)
		}
	}
	defer func() {
		// A panic here is a bug in luafn, not in the function: contain it to this VM.
		if r := recover(); r != nil {
			v.trip(ErrRuntime, fmt.Sprintf("internal error: %v", r))
			res, err = nil, &InvokeError{Function: f.prog.spec.Name, Version: f.prog.spec.Version, Kind: ErrRuntime, Message: fmt.Sprintf("internal error: %v", r)}
		}
		if !v.usable() {
			// A bound tripped: this VM's state is suspect and every instruction
			// fails. Replace it now, so the slot is warm for the next event.
			v.close()
			if v, _ = newVM(f.prog, &f.host, f.logs); v == nil {
				f.pool <- nil
				return
			}
		}
		f.pool <- v
	}()
	return v.invoke(ev, ctx.Done())
}

// Close releases the VMs after the invocations in flight have finished, and sends the
// last report of dropped log lines. Later Invokes return ErrClosed. Close may be called
// more than once.
func (f *Function) Close() {
	f.closeOnce.Do(func() {
		close(f.done)
		for range cap(f.pool) {
			if v := <-f.pool; v != nil {
				v.close()
			}
		}
		f.logs.close()
	})
}

// invoke runs one invocation on v.
func (v *vm) invoke(ev *Event, canceled <-chan struct{}) (*Result, error) {
	start := time.Now()
	v.canceled = canceled
	v.current = invocation{eventID: ev.ID} // reused in place: its slices go to the Result, not back
	inv := &v.current
	v.inv = inv
	v.patternSteps = v.limits.PatternSteps
	v.pending = 0
	defer func() {
		v.inv, v.canceled = nil, nil
		v.L.SetTop(0)
	}()
	L := v.L
	handle, ok := L.G.Global.RawGetString(string(v.handleKey)).(*lua.LFunction)
	if !ok {
		spec := &v.prog.spec
		return nil, &InvokeError{Function: spec.Name, Version: spec.Version, Kind: ErrNoHandle, Message: "handle is not a function"}
	}
	L.Push(handle)
	L.Push(v.eventTable(ev))
	err := v.run(1, 1, start)
	res := &Result{Logs: inv.logs}
	v.endLogs(res)
	if err != nil {
		res.Duration = time.Since(start)
		return res, err
	}
	if ret := L.Get(-1); ret != lua.LNil {
		res.Value, err = v.encodeJSON(ret)
	}
	res.Duration = time.Since(start)
	if err != nil {
		spec := &v.prog.spec
		ie := &InvokeError{Function: spec.Name, Version: spec.Version, Kind: ErrResult, Message: "handle's result: " + err.Error()}
		if te, ok := err.(*tripError); ok {
			ie.Kind, ie.Message = te.kind, te.msg
		}
		return res, ie
	}
	res.Effects = inv.effects
	return res, nil
}
