package luafn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hostileCase is one script of testdata/hostile, with the outcome its header demands:
// "-- want: timeout|memory|depth|registry|pattern", "-- want: runtime: <text>" (a Lua
// error containing text), or "-- want: contained" (handle returns "contained": every
// escape it tried was refused and changed nothing).
type hostileCase struct {
	name, src string
	kind      error  // nil for contained
	text      string // for runtime errors
}

func loadHostile(t *testing.T) []hostileCase {
	files, err := filepath.Glob("testdata/hostile/*.lua")
	if err != nil || len(files) == 0 {
		t.Fatalf("no hostile scripts: %v", err)
	}
	kinds := map[string]error{"timeout": ErrTimeout, "memory": ErrMemory, "depth": ErrDepth,
		"registry": ErrRegistry, "pattern": ErrPattern, "runtime": ErrRuntime}
	var out []hostileCase
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		head, _, _ := strings.Cut(string(b), "\n")
		want, ok := strings.CutPrefix(head, "-- want: ")
		if !ok {
			t.Fatalf("%s: no '-- want:' header", file)
		}
		c := hostileCase{name: filepath.Base(file), src: string(b)}
		if want != "contained" {
			k, text, _ := strings.Cut(want, ": ")
			if c.kind = kinds[k]; c.kind == nil {
				t.Fatalf("%s: unknown outcome %q", file, want)
			}
			c.text = text
		}
		out = append(out, c)
	}
	return out
}

// check compares one outcome with what the case demands.
func (c hostileCase) check(res *Result, err error) error {
	if c.kind == nil {
		if err != nil || res.value() != "contained" {
			return fmt.Errorf("want contained, got %v, %v", res, err)
		}
		return nil
	}
	if !errors.Is(err, c.kind) {
		return fmt.Errorf("want %v, got %v", c.kind, err)
	}
	if c.text != "" && !strings.Contains(err.Error(), c.text) {
		return fmt.Errorf("want an error containing %q, got %v", c.text, err)
	}
	return nil
}

// TestHostileCorpus runs every hostile script, twice each and in parallel, beside a
// well-behaved function under steady load. Each must be stopped by the bound its header
// names; the well-behaved function must return only correct results; and once the
// hostile functions are gone the heap must be back near where it started.
func TestHostileCorpus(t *testing.T) {
	cases := loadHostile(t)
	kv := newMemKV()
	host := Host{KV: kv, GatewayID: "gw-test", Pins: levelPins{"GPIO4": 1}, WritablePins: []string{"GPIO17"}}
	// Timeouts are wall time, and CI machines are shared: a script that must trip
	// another bound gets ample time, so only scripts meant to time out do.
	limitsFor := func(c hostileCase) Limits {
		if c.kind == ErrTimeout {
			return Limits{Timeout: 200 * time.Millisecond, Memory: 4 << 20}
		}
		return Limits{Timeout: 5 * time.Second, Memory: 4 << 20}
	}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	good := newFn(t, `function handle(e)
		local s = 0
		for _, x in ipairs(e.payload.values) do s = s + x end
		return {id = e.id, sum = s, n = kv.incr("n")}
	end`, Limits{Concurrency: 2, Timeout: 5 * time.Second}, host)
	stop := make(chan struct{})
	var goodRuns atomic.Int64
	var goodWG sync.WaitGroup
	for w := range 2 {
		goodWG.Add(1)
		go func() {
			defer goodWG.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				a, b := i%97, w*1000+i%13
				res, err := good.Invoke(context.Background(), &Event{ID: id, Payload: []byte(fmt.Sprintf(`{"values":[%d,%d,0.5]}`, a, b))})
				if err != nil {
					t.Errorf("well-behaved function failed: %v", err)
					return
				}
				m := res.value().(map[string]any)
				if m["id"] != id || m["sum"] != float64(a+b)+0.5 {
					t.Errorf("well-behaved function returned %v for %s", m, id)
					return
				}
				goodRuns.Add(1)
			}
		}()
	}

	// As many hostile functions run at once as there are cores: more would only make
	// them wait for CPU, and a wall-clock timeout cannot tell waiting from running.
	slots := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			p, err := Compile(Spec{Name: c.name, Version: 1, Filename: c.name, Source: c.src, Limits: limitsFor(c)})
			if err != nil {
				t.Errorf("%s: compile: %v", c.name, err)
				return
			}
			f, err := New(p, host)
			if err != nil {
				// Refused at deploy: the top level itself is the hostile part.
				var ce *CompileError
				if !errors.As(err, &ce) || c.kind != ErrRuntime || !strings.Contains(ce.Message, c.text) {
					t.Errorf("%s: deploy failed: %v", c.name, err)
				}
				return
			}
			defer f.Close()
			for run := 1; run <= 2; run++ {
				res, err := f.Invoke(context.Background(), &Event{ID: "h", Source: "console"})
				if err := c.check(res, err); err != nil {
					t.Errorf("%s, run %d: %v", c.name, run, err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	goodWG.Wait()
	if goodRuns.Load() == 0 {
		t.Fatal("the well-behaved function never ran")
	}
	t.Logf("%d hostile scripts, %d well-behaved invocations alongside", len(cases), goodRuns.Load())

	good.Close()
	var after runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&after)
	const slack = 8 << 20
	if after.HeapAlloc > before.HeapAlloc+slack {
		t.Errorf("heap at %d bytes after the corpus, %d before: more than %d retained", after.HeapAlloc, before.HeapAlloc, slack)
	}
	t.Logf("heap before %d KiB, after %d KiB (peak sys %d MiB)", before.HeapAlloc>>10, after.HeapAlloc>>10, after.Sys>>20)
}

// A function that uses a standard global the sandbox leaves out is told so, not given
// Lua's bare "attempt to index a non-table object(nil)"; the same error without such a
// global stays as Lua says it.
func TestMissingGlobalsAreNamed(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"return os.time()", "os is not available in the sandbox; time.now() gives the time in unix ms (attempt to index a non-table object(nil) with key 'time')"},
		{"local f = io.open('x')", "io is not available in the sandbox (attempt to index a non-table object(nil) with key 'open')"},
		{"return require('json')", "require is not available in the sandbox (attempt to call a non-function object)"},
		{"return require 'json'", "require is not available in the sandbox (attempt to call a non-function object)"},
		{"local t = {}; return t.x.y + os.time()", "attempt to index a non-table object(nil) with key 'y'"},
		{"return nothing.here", "attempt to index a non-table object(nil) with key 'here'"},
	} {
		f := newFn(t, "function handle(event)\n  "+c.src+"\nend\n", Limits{}, Host{})
		ie := callErr(t, f, nil, ErrRuntime)
		if ie.Message != c.want || ie.Line != 2 {
			t.Errorf("%s:\n got %d: %s\nwant 2: %s", c.src, ie.Line, ie.Message, c.want)
		}
	}
	// At load time too: the deploy is refused with the same words.
	p, err := Compile(Spec{Name: "fn", Source: "local t0 = os.clock()\nfunction handle() end\n"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(p, Host{})
	var ce *CompileError
	if !errors.As(err, &ce) || !strings.HasPrefix(ce.Message, "os is not available in the sandbox") || ce.Line != 1 {
		t.Errorf("load-time use of os: %v", err)
	}
}
