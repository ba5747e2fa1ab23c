package luafn

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinels, one per way an invocation can fail. An *InvokeError unwraps to one of them,
// so callers test the kind with errors.Is(err, luafn.ErrTimeout).
var (
	ErrRuntime  = errors.New("lua error")                 // the function raised an error or misused an API
	ErrTimeout  = errors.New("timeout")                   // Limits.Timeout
	ErrMemory   = errors.New("memory limit")              // Limits.Memory
	ErrDepth    = errors.New("call depth limit")          // Limits.CallDepth
	ErrRegistry = errors.New("registry limit")            // Limits.Registry
	ErrPattern  = errors.New("pattern matching limit")    // Limits.PatternSteps, or a pattern nested too deep
	ErrClosed   = errors.New("function closed")           // Invoke after Close: the event did not run
	ErrCanceled = errors.New("invocation canceled")       // the caller's context ended first
	ErrResult   = errors.New("result cannot become JSON") // handle returned a function, NaN, a cycle...
	ErrNoHandle = errors.New("no global function handle") // the source does not define handle
)

// InvokeError is a failed invocation of one version of a function.
type InvokeError struct {
	Function string
	Version  int
	Kind     error  // one of the sentinels above
	Message  string // the Lua message, without the file:line prefix
	File     string // Lua file and line where it failed, when known
	Line     int
	// Traceback is a short Lua traceback, innermost call first, one "file:line: in
	// function 'name'" per line.
	Traceback string
}

func (e *InvokeError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s v%d: ", e.Function, e.Version)
	if e.File != "" {
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	}
	b.WriteString(e.Message)
	return b.String()
}

func (e *InvokeError) Unwrap() error { return e.Kind }

// CompileError is a source that does not compile, or whose top level fails when it is
// loaded. Line is 0 when the error has no position.
type CompileError struct {
	Function string
	File     string
	Line     int
	Message  string
}

func (e *CompileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: %s:%d: %s", e.Function, e.File, e.Line, e.Message)
	}
	return fmt.Sprintf("%s: %s: %s", e.Function, e.File, e.Message)
}
