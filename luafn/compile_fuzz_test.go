package luafn

import (
	"context"
	"errors"
	"testing"
	"time"
)

// FuzzDeploy deploys arbitrary source: Compile, New and Invoke must return typed errors,
// never panic or hang, whatever the source does.
func FuzzDeploy(f *testing.F) {
	for _, s := range []string{
		"function handle(e) return e.id end",
		"function handle() return {1, 'a', x = {y = true}} end",
		"local t = setmetatable({}, {__index = function(t, k) return k end}) function handle() return t.x end",
		"function handle() return string.rep('x', 10):gsub('x', '%0%0') end",
		"x = ", "function handle() return 1 +", "return {{{{", "goto l", "::a:: goto a",
		"function handle() local s = '' for i = 1, 10 do s = s .. i end return s end",
	} {
		f.Add(s)
	}
	lim := Limits{Timeout: 20 * time.Millisecond, Memory: 1 << 20}
	f.Fuzz(func(t *testing.T, src string) {
		p, err := Compile(Spec{Name: "fz", Source: src, Limits: lim})
		if err != nil {
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("compile: untyped error %v", err)
			}
			return
		}
		fn, err := New(p, Host{})
		if err != nil {
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("new: untyped error %v", err)
			}
			return
		}
		defer fn.Close()
		if _, err := fn.Invoke(context.Background(), &Event{ID: "1", Payload: []byte(`{"a":1}`), Topic: "t"}); err != nil {
			var ie *InvokeError
			if !errors.As(err, &ie) {
				t.Fatalf("invoke: untyped error %v", err)
			}
			if ie.Kind == ErrRuntime && len(ie.Message) > 16 && ie.Message[:16] == "internal error: " {
				t.Fatalf("invoke: %v", err)
			}
		}
	})
}
